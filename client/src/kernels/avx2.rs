//! AVX2 + FMA + F16C dot products, the same arithmetic as [`super::scalar`] eight or
//! thirty-two lanes at a time (integer products are exact, so results differ from the scalar
//! reference only by float summation order).
//!
//! Every function here is `unsafe` only because it needs those CPU features: callers reach
//! them through [`super::dot_fn`], which hands them out only when [`super::cpu::level`] says
//! the CPU has them. Loads stay inside the `chunks_exact` blocks they are taken from.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_at(b: &[u8], i: usize) -> f32 {
    let h = u16::from_le_bytes([b[i], b[i + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
}

/// 16 bytes of packed nibbles -> 32 bytes: low nibbles in lanes 0..16, high in 16..32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles_32(b: &[u8]) -> __m256i {
    debug_assert!(b.len() >= 16);
    // SAFETY: b holds at least 16 bytes (asserted by every caller's block size).
    let lo = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
    let hi = _mm_srli_epi16(lo, 4);
    _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0f))
}

/// 32 bytes from a block.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_32(b: &[u8]) -> __m256i {
    debug_assert!(b.len() >= 32);
    // SAFETY: b holds at least 32 bytes.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Byte k is 0xFF where bit k of `x` is set.
#[inline]
#[target_feature(enable = "avx2")]
fn bits_32(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Σ unsigned(a) × signed(b) over 32 bytes, as 8 float lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_sum_us8(a: __m256i, b: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(a, b);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Σ signed(a) × signed(b) over 32 bytes, as 8 float lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_sum_i8(a: __m256i, b: __m256i) -> __m256 {
    mul_sum_us8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// Q4_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (wb, ab) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
        let d = _mm256_set1_ps(f16_at(wb, 0) * f16_at(ab, 0));
        // SAFETY: wb is 18 bytes (16 from 2), ab is 34 bytes (32 from 2).
        let (qx, qy) = unsafe { (nibbles_32(&wb[2..]), load_32(&ab[2..])) };
        let qx = _mm256_sub_epi8(qx, _mm256_set1_epi8(8));
        acc = _mm256_fmadd_ps(d, mul_sum_i8(qx, qy), acc);
    }
    hsum(acc)
}

/// Q4_1 · Q8_1.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (wb, ab) in w.chunks_exact(20).zip(a.chunks_exact(36)) {
        let d = _mm256_set1_ps(f16_at(wb, 0) * f16_at(ab, 0));
        mins += f16_at(wb, 2) * f16_at(ab, 2);
        // SAFETY: wb is 20 bytes (16 from 4), ab is 36 bytes (32 from 4).
        let (qx, qy) = unsafe { (nibbles_32(&wb[4..]), load_32(&ab[4..])) };
        acc = _mm256_fmadd_ps(d, mul_sum_us8(qx, qy), acc);
    }
    hsum(acc) + mins
}

/// Q5_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (wb, ab) in w.chunks_exact(22).zip(a.chunks_exact(34)) {
        let d = _mm256_set1_ps(f16_at(wb, 0) * f16_at(ab, 0));
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        // SAFETY: wb is 22 bytes (16 from 6), ab is 34 bytes (32 from 2).
        let (qx, qy) = unsafe { (nibbles_32(&wb[6..]), load_32(&ab[2..])) };
        // Where the fifth bit is clear, the value is nibble - 16: set the high nibble to 0xF.
        let high = _mm256_andnot_si256(bits_32(qh), _mm256_set1_epi8(0xf0u8 as i8));
        acc = _mm256_fmadd_ps(d, mul_sum_i8(_mm256_or_si256(qx, high), qy), acc);
    }
    hsum(acc)
}

/// Q5_1 · Q8_1.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (wb, ab) in w.chunks_exact(24).zip(a.chunks_exact(36)) {
        let d = _mm256_set1_ps(f16_at(wb, 0) * f16_at(ab, 0));
        mins += f16_at(wb, 2) * f16_at(ab, 2);
        let qh = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]);
        // SAFETY: wb is 24 bytes (16 from 8), ab is 36 bytes (32 from 4).
        let (qx, qy) = unsafe { (nibbles_32(&wb[8..]), load_32(&ab[4..])) };
        let high = _mm256_and_si256(bits_32(qh), _mm256_set1_epi8(0x10));
        acc = _mm256_fmadd_ps(d, mul_sum_us8(_mm256_or_si256(qx, high), qy), acc);
    }
    hsum(acc) + mins
}

/// Q8_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (wb, ab) in w.chunks_exact(34).zip(a.chunks_exact(34)) {
        let d = _mm256_set1_ps(f16_at(wb, 0) * f16_at(ab, 0));
        // SAFETY: both blocks are 34 bytes (32 from 2).
        let (qx, qy) = unsafe { (load_32(&wb[2..]), load_32(&ab[2..])) };
        acc = _mm256_fmadd_ps(d, mul_sum_i8(qx, qy), acc);
    }
    hsum(acc)
}

/// f32 · f32, both as little-endian bytes (weights straight from the file may be unaligned).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut wc = w.chunks_exact(128);
    let mut xc = x.chunks_exact(128);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: each chunk is 128 bytes; k * 32 + 32 <= 128.
            let (wv, xv) = unsafe {
                (
                    _mm256_loadu_ps(wb[k * 32..].as_ptr().cast()),
                    _mm256_loadu_ps(xb[k * 32..].as_ptr().cast()),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
    }
    let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(total) + super::scalar::dot_f32(wc.remainder(), xc.remainder())
}

/// f16 weights · f32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16_f32(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut wc = w.chunks_exact(16);
    let mut xc = x.chunks_exact(32);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        // SAFETY: wb is 16 bytes (8 halves), xb is 32 bytes (8 floats).
        let (wv, xv) = unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(wb.as_ptr().cast())),
                _mm256_loadu_ps(xb.as_ptr().cast()),
            )
        };
        acc = _mm256_fmadd_ps(wv, xv, acc);
    }
    hsum(acc) + super::scalar::dot_f16_f32(wc.remainder(), xc.remainder())
}

/// bf16 weights · f32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_bf16_f32(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut wc = w.chunks_exact(16);
    let mut xc = x.chunks_exact(32);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        // SAFETY: wb is 16 bytes (8 bf16), xb is 32 bytes (8 floats).
        let (wv, xv) = unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(wb.as_ptr().cast()));
            (
                _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)),
                _mm256_loadu_ps(xb.as_ptr().cast()),
            )
        };
        acc = _mm256_fmadd_ps(wv, xv, acc);
    }
    hsum(acc) + super::scalar::dot_bf16_f32(wc.remainder(), xc.remainder())
}

/// Pre-unpacked weight block: 32 quantized values as bytes plus its scale(s).
#[derive(Clone, Copy)]
struct WBlock {
    q: __m256i,
    d: f32,
    m: f32,
}

/// Which weight format a tile kernel reads, and how.
#[derive(Clone, Copy)]
pub enum TileFormat {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl TileFormat {
    fn w_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    fn a_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 36,
            Self::Q4_0 | Self::Q8_0 => 34,
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_w(f: TileFormat, b: &[u8]) -> WBlock {
    // SAFETY (all arms): `b` is one whole block of the format, longer than each load.
    unsafe {
        match f {
            TileFormat::Q4_0 => {
                let q = _mm256_sub_epi8(nibbles_32(&b[2..]), _mm256_set1_epi8(8));
                WBlock {
                    q,
                    d: f16_at(b, 0),
                    m: 0.0,
                }
            }
            TileFormat::Q4_1 => WBlock {
                q: nibbles_32(&b[4..]),
                d: f16_at(b, 0),
                m: f16_at(b, 2),
            },
            TileFormat::Q8_0 => WBlock {
                q: load_32(&b[2..]),
                d: f16_at(b, 0),
                m: 0.0,
            },
        }
    }
}

/// `R` weight rows × `T` activation rows of one format: `out[r * T + t]` = row r · act t.
/// Each weight block is unpacked once for all `T` activations and each activation block
/// loaded once for all `R` rows, which is what makes batched prompts fast.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<const R: usize, const T: usize>(
    f: TileFormat,
    w: &[&[u8]],
    a: &[&[u8]],
    out: &mut [f32],
) {
    let (wb, ab) = (f.w_bytes(), f.a_bytes());
    let nb = w[0].len() / wb;
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut mins = [[0f32; T]; R];
    for b in 0..nb {
        let mut ws = [WBlock {
            q: _mm256_setzero_si256(),
            d: 0.0,
            m: 0.0,
        }; R];
        for (r, slot) in ws.iter_mut().enumerate() {
            // SAFETY: every row holds `nb` whole blocks.
            *slot = unsafe { load_w(f, &w[r][b * wb..(b + 1) * wb]) };
        }
        for t in 0..T {
            let blk = &a[t][b * ab..(b + 1) * ab];
            let (off, da) = match f {
                TileFormat::Q4_1 => (4, f16_at(blk, 0)),
                _ => (2, f16_at(blk, 0)),
            };
            // SAFETY: an activation block holds 32 quantized bytes from `off`.
            let qy = unsafe { load_32(&blk[off..]) };
            let sa = if matches!(f, TileFormat::Q4_1) {
                f16_at(blk, 2)
            } else {
                0.0
            };
            for r in 0..R {
                let prod = match f {
                    TileFormat::Q4_1 => mul_sum_us8(ws[r].q, qy),
                    _ => mul_sum_i8(ws[r].q, qy),
                };
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(ws[r].d * da), prod, acc[r][t]);
                mins[r][t] += ws[r].m * sa;
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            out[r * T + t] = hsum(acc[r][t]) + mins[r][t];
        }
    }
}
