//! AVX2 + FMA + F16C dot products, the same arithmetic as [`super::scalar`] eight or
//! thirty-two lanes at a time (integer products are exact, so results differ from the scalar
//! reference only by float summation order).
//!
//! Every function here is `unsafe` only because it needs those CPU features: callers reach
//! them through [`super::dot_fn`], which hands them out only when [`super::cpu::level`] says
//! the CPU has them. Loads stay inside the `chunks_exact` blocks they are taken from.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::q4_0x16::{ActRows, GROUP_ROWS, LINE_BYTES, Q4_0x16, for_each_tile};
use super::{ActBlock, GEMM_Q4_0, GEMM_Q4_1, GEMM_Q5_0, GEMM_Q8_0};

mod kquants;
pub use kquants::{dot_q4_k_q8_k, dot_q6_k_q8_k, dots_q4_k_q8_k, dots_q6_k_q8_k};

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

/// Bytes per weight block of format `F`.
const fn block_bytes(f: u8) -> usize {
    match f {
        GEMM_Q4_0 => 18,
        GEMM_Q4_1 => 20,
        GEMM_Q5_0 => 22,
        _ => 34,
    }
}

/// A weight block's 32 codes as the unsigned operand of `maddubs`: Q4_0 / Q4_1 nibbles
/// (0..=15, the low nibbles in bytes 0..16 and the high ones in 16..32, as
/// [`dot_q4_0_q8_0`] lays them out), or Q8_0's |code|; plus Q8_0's signed codes (the sign
/// source for the activations; zero for the 4-bit formats).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weight_codes<const F: u8>(p: *const u8) -> (__m256i, __m256i) {
    // SAFETY: `p` is the start of one whole block of format F (caller's contract), which holds
    // 32 code bytes from offset 2 (Q8_0) or 16 from offset 2 (Q4_0) / 4 (Q4_1).
    unsafe {
        if F == GEMM_Q8_0 {
            let q = _mm256_loadu_si256(p.add(2).cast());
            return (_mm256_sign_epi8(q, q), q);
        }
        let off = match F {
            GEMM_Q4_1 => 4,
            GEMM_Q5_0 => 6,
            _ => 2,
        };
        let packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(off).cast()));
        // Shifting the upper 128-bit half's dwords by 4 brings each byte's high nibble down.
        let shifted = _mm256_srlv_epi32(packed, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
        let nibbles = _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f));
        if F == GEMM_Q5_0 {
            // Q5_0's fifth bits (bytes 2..6): the codes 0..=31, offset by 16.
            let qh = p.add(2).cast::<u32>().read_unaligned();
            let fifth = _mm256_and_si256(bits_32(qh), _mm256_set1_epi8(0x10));
            return (_mm256_or_si256(nibbles, fifth), _mm256_setzero_si256());
        }
        (nibbles, _mm256_setzero_si256())
    }
}

/// The 8 integer lane sums of one weight block with one activation block, the very lanes of
/// [`mul_sum_i8`] / [`mul_sum_us8`] in the per-format dot products. Q4_0 takes `Σ q·a − 8·Σ a`
/// (the block's precomputed `8·Σ a`), which is `Σ (q − 8)·a` exactly; Q8_0 multiplies |w| by
/// the activations signed like w, as [`mul_sum_i8`] does.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane_sums<const F: u8>(u: __m256i, w: __m256i, a: &ActBlock) -> __m256i {
    // SAFETY: `ActBlock` is 64-byte aligned and 64 bytes long: both 32-byte halves are aligned.
    let (qa, extra) = unsafe {
        (
            _mm256_load_si256(a.qs.as_ptr().cast()),
            _mm256_load_si256(a.extra.as_ptr().cast()),
        )
    };
    let ones = _mm256_set1_epi16(1);
    match F {
        GEMM_Q4_0 => _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(u, qa), ones), extra),
        GEMM_Q4_1 => _mm256_madd_epi16(_mm256_maddubs_epi16(u, qa), ones),
        // Σ q·a − 16·Σ a = Σ (q − 16)·a, with `extra` = 8·Σ a.
        GEMM_Q5_0 => _mm256_sub_epi32(
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, qa), ones),
            _mm256_slli_epi32(extra, 1),
        ),
        _ => _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(qa, w)), ones),
    }
}

/// `R` consecutive weight rows of format `F` (the first at `w`, `row_bytes` apart, `nb` blocks
/// each) times `T` prepared activation rows: `out[r][t]` = row r · activation t, bit for bit
/// what [`dot_q4_0_q8_0`], [`dot_q4_1_q8_1`] and [`dot_q8_0_q8_0`] return: per row and
/// activation one 8-lane accumulator, `acc = fma(d_w·d_a, lanes, acc)` block after block, then
/// [`hsum`] (plus, for Q4_1, the sum of `m_w·s_a` taken block after block).
///
/// Faster than those because each weight block is unpacked once for `T` activations, each
/// activation block is loaded once for `R` rows, and the activations come prepared
/// ([`ActBlock`], f32 scales) so only the weight side needs conversions.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` points at `R` rows of `row_bytes` bytes, each holding
/// at least `nb` blocks of format `F`; every `acts[t]` and `scales[t]` has at least `nb` items.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm<const F: u8, const R: usize, const T: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    acts: [&[ActBlock]; T],
    scales: [&[[f32; 4]]; T],
) -> [[f32; T]; R] {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    // Lane 1 accumulates Q4_1's m_w·s_a (lane 0 gets d_w·d_a, unused).
    let mut mins = [[_mm_setzero_ps(); T]; R];
    // One activation row (generation) streams the weights from memory once: fetch the rows
    // [`PREFETCH_GROUPS`] calls ahead, a slice per block, so that loads rarely wait on DRAM.
    let group = R * row_bytes;
    let step = group.div_ceil(nb.max(1)).next_multiple_of(64);
    let ahead = w.wrapping_add(PREFETCH_GROUPS * group);
    for b in 0..nb {
        if T == 1 {
            for k in (0..step).step_by(64) {
                // Prefetches never fault, whatever the address (past the matrix at its end).
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b * step + k).cast());
            }
        }
        for r in 0..R {
            // SAFETY: row r's block b is inside the caller's rows (see # Safety).
            let p = unsafe { w.add(r * row_bytes + b * block_bytes(F)) };
            // [d_w, m_w (Q4_1; else two code bytes, unused), 0, 0] as f32 (exact).
            // SAFETY: a block holds at least 4 bytes.
            let head = _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
                p.cast::<i32>().read_unaligned()
            }));
            // SAFETY: as above.
            let (u, sw) = unsafe { weight_codes::<F>(p) };
            for t in 0..T {
                // SAFETY: b < nb <= acts[t].len() and scales[t].len() (see # Safety).
                let (a, sc) = unsafe { (acts[t].get_unchecked(b), scales[t].get_unchecked(b)) };
                // SAFETY: `sc` is 4 floats.
                let d = _mm_mul_ps(head, unsafe { _mm_loadu_ps(sc.as_ptr()) });
                let lanes = _mm256_cvtepi32_ps(lane_sums::<F>(u, sw, a));
                acc[r][t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), lanes, acc[r][t]);
                if F == GEMM_Q4_1 {
                    mins[r][t] = _mm_add_ps(mins[r][t], d);
                }
            }
        }
    }
    let mut out = [[0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum(acc[r][t]);
            if F == GEMM_Q4_1 {
                out[r][t] += _mm_cvtss_f32(_mm_movehdup_ps(mins[r][t]));
            }
        }
    }
    out
}

/// How many groups of rows ahead [`gemm`] prefetches weights for one activation row.
const PREFETCH_GROUPS: usize = 4;

/// Activation rows a batch tile of [`gemm`] takes.
const BATCH_T: usize = 4;

/// Weight rows a batch tile of [`gemm`] takes for format `F` (Q4_1 keeps its mins in
/// registers too, so it takes fewer).
const fn batch_rows(f: u8) -> usize {
    match f {
        GEMM_Q4_1 => 1,
        _ => 2,
    }
}

/// Whole rows `w` of format `F` (`row_bytes` each) times `n` prepared activation rows (`acts`
/// and `scales` hold `row_bytes / block` items per row, row after row): `out[r * n + t]` =
/// row r · activation t, each bit for bit the per-format dot product (see [`gemm`]).
///
/// One activation row (generation): 4 rows at a time, independent streams from memory. A batch
/// (prompt): groups of [`BATCH_T`] activations outside, so their blocks stay in L1 while the
/// weight rows stream past, tiles of [`batch_rows`] × [`BATCH_T`] inside.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_rows<const F: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &[ActBlock],
    scales: &[[f32; 4]],
    n: usize,
    out: &mut [f32],
) {
    let nb = row_bytes / block_bytes(F);
    let rows = w.len() / row_bytes;
    assert!(nb * block_bytes(F) == row_bytes && rows * row_bytes == w.len());
    assert!(acts.len() >= n * nb && scales.len() >= n * nb && out.len() >= rows * n);
    let act = |t: usize| (&acts[t * nb..(t + 1) * nb], &scales[t * nb..(t + 1) * nb]);
    // SAFETY (every `gemm` call below): the CPU features are the caller's contract; the rows
    // `r..r + R` are inside `w` (checked by each loop bound and the asserts above); every
    // activation slice holds `nb` items.
    if n == 1 {
        let (a, s) = act(0);
        let mut r = 0;
        while r + 4 <= rows {
            let o =
                unsafe { gemm::<F, 4, 1>(w[r * row_bytes..].as_ptr(), row_bytes, nb, [a], [s]) };
            for (i, v) in o.iter().enumerate() {
                out[r + i] = v[0];
            }
            r += 4;
        }
        for r in r..rows {
            out[r] =
                unsafe { gemm::<F, 1, 1>(w[r * row_bytes..].as_ptr(), row_bytes, nb, [a], [s]) }[0]
                    [0];
        }
        return;
    }
    const T: usize = BATCH_T;
    let rt = batch_rows(F);
    let mut ts = 0;
    while ts < n {
        if ts + T <= n {
            let a: [&[ActBlock]; T] = std::array::from_fn(|i| act(ts + i).0);
            let s: [&[[f32; 4]]; T] = std::array::from_fn(|i| act(ts + i).1);
            let mut r = 0;
            while r + rt <= rows {
                let p = w[r * row_bytes..].as_ptr();
                if rt == 2 {
                    let o = unsafe { gemm::<F, 2, T>(p, row_bytes, nb, a, s) };
                    for (i, vals) in o.iter().enumerate() {
                        out[(r + i) * n + ts..][..T].copy_from_slice(vals);
                    }
                } else {
                    let o = unsafe { gemm::<F, 1, T>(p, row_bytes, nb, a, s) };
                    out[r * n + ts..][..T].copy_from_slice(&o[0]);
                }
                r += rt;
            }
            for r in r..rows {
                let o =
                    unsafe { gemm::<F, 1, T>(w[r * row_bytes..].as_ptr(), row_bytes, nb, a, s) };
                out[r * n + ts..][..T].copy_from_slice(&o[0]);
            }
            ts += T;
        } else {
            let (a, s) = act(ts);
            for r in 0..rows {
                let p = w[r * row_bytes..].as_ptr();
                out[r * n + ts] = unsafe { gemm::<F, 1, 1>(p, row_bytes, nb, [a], [s]) }[0][0];
            }
            ts += 1;
        }
    }
}

/// Half `h` (rows 8h..8h + 8) of interleaved group `g` times activation rows `t0..t0 + T`,
/// the AVX2 counterpart of [`super::avx512`]'s tile: each 32-byte half-line holds 4 code
/// bytes of 8 rows; `maddubs` against 4 broadcast activation codes gives 2 i16 per row, the
/// block's eight such products are summed in i16 (|Σ| ≤ 8 · 2 · 15 · 127 < 2¹⁵: activation
/// codes are never −128) and `madd` with ones leaves one i32 per row. Then the scalar
/// reference's float steps, so results equal it bit for bit.
///
/// # Safety
/// AVX2, FMA and F16C; `t0 + T` activation rows in `acts`, `acts.nb == w.blocks()`; h < 2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x16_tile<const T: usize>(
    w: &Q4_0x16,
    g: usize,
    h: usize,
    acts: ActRows,
    t0: usize,
) -> [__m256; T] {
    let codes = w.group_codes(g);
    let scales = w.group_scales(g);
    let nb = acts.nb;
    let mask = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: group `g` has 4 lines of 64 bytes and 16 scales per block column (b < nb);
        // half h is bytes 32h..32h + 32 of each line and scales 8h..8h + 8.
        let (lines, dw) = unsafe {
            let l = codes.as_ptr().add(b * 4 * LINE_BYTES + 32 * h);
            (
                [0, 1, 2, 3].map(|k| _mm256_loadu_si256(l.add(k * LINE_BYTES).cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(
                    scales.as_ptr().add(b).cast::<u16>().add(8 * h).cast(),
                )),
            )
        };
        let lo = lines.map(|v| _mm256_and_si256(v, mask));
        let hi = lines.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask));
        for (t, acc) in acc.iter_mut().enumerate() {
            let i = (t0 + t) * nb + b;
            // SAFETY: i < (t0 + T) · nb, inside every activation array (# Safety).
            let (a, sum8, da) = unsafe {
                (
                    acts.blocks.get_unchecked(i),
                    *acts.sums8.get_unchecked(i),
                    acts.scales.get_unchecked(i)[0],
                )
            };
            let q = |k: usize| {
                let c = [
                    a.qs[4 * k],
                    a.qs[4 * k + 1],
                    a.qs[4 * k + 2],
                    a.qs[4 * k + 3],
                ];
                _mm256_set1_epi32(i32::from_le_bytes(c))
            };
            let mut s16 = _mm256_maddubs_epi16(lo[0], q(0));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[0], q(4)));
            for k in 1..4 {
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo[k], q(k)));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[k], q(4 + k)));
            }
            let s = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), _mm256_set1_epi32(sum8));
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(da));
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(_mm256_cvtepi32_ps(s), d));
        }
    }
    acc
}

/// Rows of interleaved groups `g0..g1` of `w` times every activation row, with AVX2: row
/// `r`, activation `t` goes to `out[t * stride + r]` (as [`super::avx512::gemm_q4_0x16`]).
///
/// # Safety
/// AVX2, FMA and F16C; otherwise as [`super::avx512::gemm_q4_0x16`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_q4_0x16(
    w: &Q4_0x16,
    g0: usize,
    g1: usize,
    acts: ActRows,
    n: usize,
    out: *mut f32,
    stride: usize,
) {
    debug_assert!(acts.nb == w.blocks() && g1 * GROUP_ROWS <= w.rows());
    for_each_tile(n, 4, (g0, g1), |t0, take, g| {
        for h in 0..2 {
            let store = |t: usize, v: __m256| {
                // SAFETY: element (t0 + t, 16g + 8h..+8) belongs to this call (# Safety).
                unsafe { _mm256_storeu_ps(out.add((t0 + t) * stride + g * GROUP_ROWS + 8 * h), v) }
            };
            // SAFETY (each arm): `take` rows from t0 exist (t0 + take <= n).
            match take {
                4 => unsafe { x16_tile::<4>(w, g, h, acts, t0) }
                    .into_iter()
                    .enumerate()
                    .for_each(|(t, v)| store(t, v)),
                2 => unsafe { x16_tile::<2>(w, g, h, acts, t0) }
                    .into_iter()
                    .enumerate()
                    .for_each(|(t, v)| store(t, v)),
                _ => store(0, unsafe { x16_tile::<1>(w, g, h, acts, t0) }[0]),
            }
        }
    });
}
