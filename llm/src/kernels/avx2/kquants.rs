//! AVX2 Q4_K and Q6_K dot products against Q8_K activations, one weight row times `T`
//! activation rows at once, in the lanes of [`crate::kernels::kquants`] (the same bits).

use std::arch::x86_64::*;

use super::{f16_at, hsum, load_32};

/// Q4_K · Q8_K, in the lanes of [`super::kquants::dot_q4_k_q8_k`] (the same bits).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: the same CPU features.
    let [r] = unsafe { dots_q4_k_q8_k::<1>(w, [a]) };
    r
}

/// One Q4_K weight row · `T` Q8_K activation rows, each result bit for bit
/// [`dot_q4_k_q8_k`]: the weight blocks are unpacked once for the `T` activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dots_q4_k_q8_k<const T: usize>(w: &[u8], a: [&[u8]; T]) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut acc_m = [_mm_setzero_ps(); T];
    let m4 = _mm256_set1_epi8(0x0f);
    for (b, wb) in w.chunks_exact(144).enumerate() {
        let (dw, dminw) = (f16_at(wb, 0), f16_at(wb, 2));
        // The 6-bit scales and mins (as `q4_k::scale_min`), unpacked four at a time.
        let u = |i: usize| {
            u32::from_le_bytes([wb[4 + 4 * i], wb[5 + 4 * i], wb[6 + 4 * i], wb[7 + 4 * i]])
        };
        let (u0, u1, u2) = (u(0), u(1), u(2));
        let scales_lo = u0 & 0x3f3f_3f3f;
        let scales_hi = (u2 & 0x0f0f_0f0f) | (((u0 >> 6) & 0x0303_0303) << 4);
        let mins_lo = u1 & 0x3f3f_3f3f;
        let mins_hi = ((u2 >> 4) & 0x0f0f_0f0f) | (((u1 >> 6) & 0x0303_0303) << 4);
        let sm = _mm256_cvtepu8_epi16(_mm_set_epi32(
            mins_hi as i32,
            mins_lo as i32,
            scales_hi as i32,
            scales_lo as i32,
        ));
        let mins = _mm256_extracti128_si256(sm, 1);
        let mut scales = [0i16; 8];
        // SAFETY: `scales` is 16 bytes, the low half of `sm`.
        unsafe { _mm_storeu_si128(scales.as_mut_ptr().cast(), _mm256_castsi256_si128(sm)) };
        // The codes (low and high nibbles of each 32 bytes) and their sub-block scales.
        let codes: [(__m256i, __m256i, __m256i, __m256i); 4] = std::array::from_fn(|c| {
            // SAFETY: wb is 144 bytes: 32 from 16 + 32c ≤ 112.
            let bits = unsafe { load_32(&wb[16 + 32 * c..]) };
            (
                _mm256_and_si256(bits, m4),
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
                _mm256_set1_epi16(scales[2 * c]),
                _mm256_set1_epi16(scales[2 * c + 1]),
            )
        });
        for t in 0..T {
            let ab = &a[t][b * 292..(b + 1) * 292];
            let ad = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
            let d = ad * dw;
            let dmin = -ad * dminw;
            // SAFETY: ab is 292 bytes: the 16 sums of 16 are bytes 260..292.
            let bsums = unsafe { load_32(&ab[260..]) };
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(bsums),
                _mm256_extracti128_si256(bsums, 1),
            );
            let prod = _mm_madd_epi16(mins, q8s);
            acc_m[t] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[t]);
            let mut sumi = _mm256_setzero_si256();
            for (c, &(lo, hi, s_lo, s_hi)) in codes.iter().enumerate() {
                // SAFETY: 64 codes from 4 + 64c ≤ 196, inside the 292-byte block.
                let (q8l, q8h) =
                    unsafe { (load_32(&ab[4 + 64 * c..]), load_32(&ab[36 + 64 * c..])) };
                let pl = _mm256_madd_epi16(s_lo, _mm256_maddubs_epi16(lo, q8l));
                let ph = _mm256_madd_epi16(s_hi, _mm256_maddubs_epi16(hi, q8h));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| {
        let m = _mm_add_ps(acc_m[t], _mm_movehl_ps(acc_m[t], acc_m[t]));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        hsum(acc[t]) + _mm_cvtss_f32(m)
    })
}

/// Q6_K · Q8_K, in the lanes of [`super::kquants::dot_q6_k_q8_k`] (the same bits).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: the same CPU features.
    let [r] = unsafe { dots_q6_k_q8_k::<1>(w, [a]) };
    r
}

/// One Q6_K weight row · `T` Q8_K activation rows, each result bit for bit
/// [`dot_q6_k_q8_k`]: the weight blocks are unpacked once for the `T` activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dots_q6_k_q8_k<const T: usize>(w: &[u8], a: [&[u8]; T]) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let m15 = _mm256_set1_epi8(15);
    for (b, wb) in w.chunks_exact(210).enumerate() {
        let dw = f16_at(wb, 208);
        // SAFETY: wb is 210 bytes: the scales are bytes 192..208.
        let sc16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(wb[192..].as_ptr().cast()) });
        let sc: [i16; 16] = std::array::from_fn(|k| i16::from(wb[192 + k] as i8));
        // The codes 0..=63 of the eight groups of 32 values, with their two scales each.
        let mut codes = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 8];
        for h in 0..2 {
            // SAFETY: 32-byte loads inside the 210-byte block (ql, qh).
            let (b1, b2, bh) = unsafe {
                (
                    load_32(&wb[64 * h..]),
                    load_32(&wb[64 * h + 32..]),
                    load_32(&wb[128 + 32 * h..]),
                )
            };
            let groups = [
                _mm256_or_si256(
                    _mm256_and_si256(b1, m15),
                    _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(3)), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(b2, m15),
                    _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(12)), 2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b1, 4), m15),
                    _mm256_and_si256(bh, _mm256_set1_epi8(48)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b2, 4), m15),
                    _mm256_srli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(-64)), 2),
                ),
            ];
            for (k, q) in groups.into_iter().enumerate() {
                let is = 4 * h + k;
                let scale =
                    _mm256_set_m128i(_mm_set1_epi16(sc[2 * is + 1]), _mm_set1_epi16(sc[2 * is]));
                codes[is] = (q, scale);
            }
        }
        for t in 0..T {
            let ab = &a[t][b * 292..(b + 1) * 292];
            let ad = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
            let d = ad * dw;
            // SAFETY: ab is 292 bytes (sums at 260..292).
            let bsums = unsafe { load_32(&ab[260..]) };
            // Σ (q − 32)·a = Σ q·a − 32·Σ a, per group of 16 with its scale.
            let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5);
            let mut sumi = _mm256_setzero_si256();
            for (g, &(q, scale)) in codes.iter().enumerate() {
                // SAFETY: 32 codes from 4 + 32g ≤ 228, inside the 292-byte block.
                let q8 = unsafe { load_32(&ab[4 + 32 * g..]) };
                let p = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(q, q8));
                sumi = _mm256_add_epi32(sumi, p);
            }
            let sumi = _mm256_sub_epi32(sumi, offset);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum(acc[t]))
}
