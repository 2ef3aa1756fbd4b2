//! AVX-512 VNNI matrix products over Q4_0 rows interleaved sixteen at a time
//! ([`super::q4_0x16`]) and Q8_0 activations.
//!
//! Per block column, one `vpdpbusd` multiplies 4 unsigned codes of each of the 16 rows by 4
//! signed activation codes broadcast to every lane; eight of them cover the block's 32 codes,
//! and each i32 lane ends holding `Σ q·a` of one row. `Σ (q − 8)·a = Σ q·a − 8·Σ a` takes the
//! activation block's precomputed `8·Σ a`; then, per row, `acc + (sum as f32) · (d_w · d_a)`
//! block after block — exactly the scalar reference's arithmetic ([`super::scalar`]), so
//! results equal it bit for bit (the integer sums are exact and the float steps are the same
//! operations in the same order).
//!
//! `unsafe` only because of the CPU features: [`super::matmul`] calls in only when
//! [`super::cpu::level`] is [`super::Level::Avx512`].
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::q4_0x16::{ActRows, GROUP_ROWS, LINE_BYTES, Q4_0x16, for_each_tile};

/// Activation rows a tile takes at most (8 accumulators + 8 unpacked code vectors + temporaries
/// fit the 32 registers).
const MAX_T: usize = 8;

/// Group `g`'s 16 rows times activation rows `t0..t0 + T`: one f32 vector of 16 row results
/// per activation row.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `t0 + T` activation rows exist in
/// `acts`, each with `w.blocks()` blocks (`acts.nb == w.blocks()`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const T: usize>(w: &Q4_0x16, g: usize, acts: ActRows, t0: usize) -> [__m512; T] {
    let codes = w.group_codes(g);
    debug_assert!(
        codes.len() == w.blocks() * 4 * LINE_BYTES && codes.as_ptr().addr().is_multiple_of(64)
    );
    let scales = w.group_scales(g);
    let nb = acts.nb;
    let mask = _mm512_set1_epi8(0x0f);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: group `g` has 4 lines (64-byte aligned: the codes are page-aligned and lines
        // 64 bytes long) and one set of 16 scales per block column (b < nb).
        let (lines, dw) = unsafe {
            let l = codes.as_ptr().add(b * 4 * LINE_BYTES);
            (
                [
                    _mm512_load_si512(l.cast()),
                    _mm512_load_si512(l.add(LINE_BYTES).cast()),
                    _mm512_load_si512(l.add(2 * LINE_BYTES).cast()),
                    _mm512_load_si512(l.add(3 * LINE_BYTES).cast()),
                ],
                _mm512_cvtph_ps(_mm256_loadu_si256(scales.as_ptr().add(b).cast())),
            )
        };
        let lo = lines.map(|v| _mm512_and_si512(v, mask));
        let hi = lines.map(|v| _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask));
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
                _mm512_set1_epi32(i32::from_le_bytes(c))
            };
            // Codes 0..16 (low nibbles) pair with activations 0..16, 16..32 with 16..32; two
            // independent chains.
            let mut s0 = _mm512_dpbusd_epi32(zero, lo[0], q(0));
            let mut s1 = _mm512_dpbusd_epi32(zero, hi[0], q(4));
            for k in 1..4 {
                s0 = _mm512_dpbusd_epi32(s0, lo[k], q(k));
                s1 = _mm512_dpbusd_epi32(s1, hi[k], q(4 + k));
            }
            let s = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(sum8));
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(_mm512_cvtepi32_ps(s), d));
        }
    }
    acc
}

/// Rows of groups `g0..g1` of `w` times every activation row: row `r`, activation `t` goes
/// to `out[t * stride + r]`.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `acts` holds `n` rows of
/// `w.blocks()` blocks (`acts.nb == w.blocks()`); `g1 * 16 <= w.rows()`; `out` is valid for
/// writes at `t * stride + r` for every `t < n` and row `r` of those groups, and nothing else
/// reads or writes those elements during the call.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
    for_each_tile(n, MAX_T, (g0, g1), |t0, take, g| {
        let store = |t: usize, v: __m512| {
            // SAFETY: element (t0 + t, 16g..16g + 16) belongs to this call (# Safety).
            unsafe { _mm512_storeu_ps(out.add((t0 + t) * stride + g * GROUP_ROWS), v) }
        };
        // SAFETY (each arm): `take` rows from t0 exist (t0 + take <= n), see # Safety.
        match take {
            MAX_T => unsafe { tile::<MAX_T>(w, g, acts, t0) }
                .into_iter()
                .enumerate()
                .for_each(|(t, v)| store(t, v)),
            4 => unsafe { tile::<4>(w, g, acts, t0) }
                .into_iter()
                .enumerate()
                .for_each(|(t, v)| store(t, v)),
            2 => unsafe { tile::<2>(w, g, acts, t0) }
                .into_iter()
                .enumerate()
                .for_each(|(t, v)| store(t, v)),
            _ => store(0, unsafe { tile::<1>(w, g, acts, t0) }[0]),
        }
    });
}
