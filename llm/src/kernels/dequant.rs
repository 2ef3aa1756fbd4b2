//! Rows expanded to f32 for the training products (`backprop::linalg`), which dequantize every
//! weight tile on every pass: AVX2 paths for the formats real bases store (Q4_0, Q4_1, Q8_0),
//! bit for bit the [`crate::quant`] reference (a product then a sum, never a fused one), and
//! the reference for every other format or CPU.

use crate::quant::{self, GgmlType, QuantError};

/// Decodes `src` (whole blocks of `ty`) into `dst`, as [`quant::dequantize_row`] does.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
        && super::cpu::level() >= super::cpu::Level::Avx2
    {
        quant::check_lengths(ty, dst.len(), src.len())?;
        // SAFETY: `cpu::level()` found AVX2 and F16C on this CPU; the lengths were checked
        // to be whole blocks of `ty` on both sides.
        #[allow(unsafe_code)]
        unsafe {
            avx2_rows(ty, src, dst)
        };
        return Ok(());
    }
    quant::dequantize_row(ty, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,f16c")]
unsafe fn avx2_rows(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let bytes = ty.block_bytes();
    for (b, y) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(32)) {
        // SAFETY: `b` is one whole block of `ty` and `y` its 32 values.
        unsafe {
            match ty {
                GgmlType::Q4_0 => avx2::q4_0(b, y),
                GgmlType::Q4_1 => avx2::q4_1(b, y),
                _ => avx2::q8_0(b, y),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    #[inline(always)]
    fn f16_at(b: &[u8], i: usize) -> f32 {
        f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
    }

    /// Eight bytes at `q` widened to eight f32 (`SIGNED`: as i8, else as u8).
    #[inline(always)]
    unsafe fn widen<const SIGNED: bool>(q: __m128i) -> __m256 {
        unsafe {
            if SIGNED {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
            } else {
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q))
            }
        }
    }

    /// The low and high nibbles of 16 bytes.
    #[inline(always)]
    unsafe fn nibbles(qs: &[u8]) -> (__m128i, __m128i) {
        unsafe {
            let q = _mm_loadu_si128(qs.as_ptr().cast());
            let m = _mm_set1_epi8(0x0F);
            (_mm_and_si128(q, m), _mm_and_si128(_mm_srli_epi16(q, 4), m))
        }
    }

    /// Stores `f(eight values)` for the 16 nibble values of `n` at `y`.
    #[inline(always)]
    unsafe fn store16(n: __m128i, y: &mut [f32], f: impl Fn(__m256) -> __m256) {
        unsafe {
            _mm256_storeu_ps(y.as_mut_ptr(), f(widen::<false>(n)));
            _mm256_storeu_ps(
                y.as_mut_ptr().add(8),
                f(widen::<false>(_mm_srli_si128(n, 8))),
            );
        }
    }

    /// Q4_0: `(q − 8)·d`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q4_0(b: &[u8], y: &mut [f32]) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let eight = _mm256_set1_ps(8.0);
        unsafe {
            let (lo, hi) = nibbles(&b[2..18]);
            // q − 8 is exact in f32, as the reference's integer subtraction.
            let f = |v: __m256| _mm256_mul_ps(_mm256_sub_ps(v, eight), d);
            store16(lo, &mut y[..16], f);
            store16(hi, &mut y[16..], f);
        }
    }

    /// Q4_1: `q·d + m`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q4_1(b: &[u8], y: &mut [f32]) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let m = _mm256_set1_ps(f16_at(b, 2));
        unsafe {
            let (lo, hi) = nibbles(&b[4..20]);
            let f = |v: __m256| _mm256_add_ps(_mm256_mul_ps(v, d), m);
            store16(lo, &mut y[..16], f);
            store16(hi, &mut y[16..], f);
        }
    }

    /// Q8_0: `q·d`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q8_0(b: &[u8], y: &mut [f32]) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        for i in 0..4 {
            unsafe {
                let q = _mm_loadl_epi64(b[2 + 8 * i..].as_ptr().cast());
                _mm256_storeu_ps(y[8 * i..].as_mut_ptr(), _mm256_mul_ps(widen::<true>(q), d));
            }
        }
    }
}
