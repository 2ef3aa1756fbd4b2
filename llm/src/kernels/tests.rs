//! Property tests for the dot-product kernels and the matrix product, on seeded random data
//! (ChaCha8): every format with a direct kernel, many row lengths (1 block, odd counts such as 7
//! and 49 blocks, SmolLM2's 576 and 1536 values, random counts), rows of very different
//! magnitudes, zero blocks, constant blocks, sparse blocks, and for the block formats also
//! weight blocks of random bytes (every nibble and high-bit pattern, Q8_0 codes of −128).
//!
//! * (a) AVX2 == scalar within a float-summation bound (skipped, with a note, without AVX2);
//! * (b) scalar == the dot product of the *dequantized* weight and activation rows (pins each
//!   kernel to the block layouts that [`crate::quant`] reads and writes);
//! * (c) [`matmul`] / [`matmul_into`] == a naive loop of the same kernel, bit for bit, with 1
//!   and several activation rows, in rayon pools of 1 and 3 threads; formats without a direct
//!   kernel (K-quants from random bytes with sane scales, Q8_1, Q8_K, NF4) give exactly the
//!   dequantize-then-f32 result.
//!
//! # Tolerances
//!
//! Both kernels compute the same exact sum `S = Σ_b d_w·d_a·Σ_j q_w·q_a (+ m_w·s_a)`: integer
//! block sums are exact (i32, and < 2²⁴ when converted to f32), f16 → f32 conversions are exact,
//! and the product of two f16 scales is exact in f32 (11 + 11 significant bits). Only the float
//! accumulation differs, so each result is within `γ_k · T` of `S` (Higham: `γ_k = k·u/(1 − k·u)`,
//! `u = 2⁻²⁴`), where `k` is the number of roundings on the longest chain from a term to the
//! result and `T = Σ|terms|` bounds every partial sum. `T` is computed in f64 from the
//! dequantized rows as `Σ_i (|w_i − m_b| + |m_b|)·|a_i|` (`m_b` the block's min for Q4_1/Q5_1, else
//! 0). So
//!
//! * (a) `|simd − scalar| ≤ (k_scalar + k_simd)·u·T·1.01 + ε_sub` — with
//!   `k_scalar = blocks + 3` and `k_simd = blocks + 5` for the block formats (one FMA per block
//!   per lane, a 3-level horizontal sum, the separate sum of the mins), and for the float
//!   formats `k_scalar = n + 1` and `k_simd = n / lanes + n % lanes + 8` (lanes = 32 for f32's
//!   four accumulators, 8 for f16/bf16; the tail runs the scalar loop).
//!   `ε_sub = 4·(n + blocks + 64)·2⁻¹⁴⁹` covers roundings in the subnormal range (absolute,
//!   ≤ 2⁻¹⁵⁰ each, for every operation). For a 49-block row the bound is `≈ 6·10⁻⁶·T`; for
//!   1536 f32 values `≈ 10⁻⁴·T`. It is rigorous, not statistical: sums of same-sign terms
//!   really do lose accuracy linearly in `n` (the scalar f32 kernel uses up to a third of its
//!   share against the exact sum), and the worst AVX2 − scalar gap seen, over 6 000–9 000 rows
//!   per format, is 13–20 % of the bound. The tests print the worst ratio they see. A layout or
//!   lane bug moves the result by `O(T)`.
//! * (b) `|scalar − Σ w_i·a_i| ≤ (k_scalar + 2)·u·T·1.01 + ε_sub + Σ_b |m_b|·|s_b − σ_b|`,
//!   where `+2` covers the dequantized `d·q + m` (one rounding) and the f64 reference, and the
//!   last term is Q8_1's `s` field: the kernels add `m_b·s_b` with `s_b = f16(Σq · d)` where
//!   `d` is the f32 scale *before* its rounding to f16 (ggml's `quantize_row_q8_1_ref`), while
//!   the dequantized activations are `σ_b = Σ_{i∈b} a_i = f16(d)·Σq`. With
//!   `|d − f16(d)| ≤ 2⁻¹¹·|d|` (normal) or `≤ 2⁻²⁵` (subnormal), plus the f32 and f16 roundings
//!   of `s_b` itself, `|s_b − σ_b| ≤ 2⁻⁹·|σ_b| + (|Σq| + 2)·2⁻²⁴` (generous by about 2×; the
//!   bound, not the actual `s_b`, is what the test uses). For tiny activations (f16 `d`
//!   subnormal or 0) this term dominates: `s_b` can even be nonzero when every dequantized
//!   activation of the block is 0.
//! * (c) exact equality (`to_bits`): the matrix product must run the very kernel the naive
//!   loop runs on the very bytes.

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::quant::{self, GgmlType};

/// The formats with a direct kernel.
const DIRECT: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::F32,
];

/// The K-quants with a direct kernel against Q8_K activations ([`super::kquants`]).
const KQUANT: [GgmlType; 2] = [GgmlType::Q4K, GgmlType::Q6K];

/// Formats without a direct kernel (matmul dequantizes their rows).
const FALLBACK: [GgmlType; 6] = [
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q5K,
    GgmlType::Q8K,
    GgmlType::Nf4,
];

const U: f64 = 1.0 / (1u64 << 24) as f64;
/// The smallest positive subnormal f32, 2⁻¹⁴⁹.
const SUB: f64 = 1.401_298_464_324_817e-45;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn is_block(ty: GgmlType) -> bool {
    ty.block_len() > 1
}

/// log10 of the largest and smallest row magnitudes a format can hold without overflowing
/// its f16 fields: quantized scales are f16 (`amax / 8` … `amax / 127`), and Q8_1's `s`
/// (`d · Σq ≈ Σ a`) must stay below 65504 over a block of 32.
fn mag_range(ty: GgmlType) -> (f64, f64) {
    match ty {
        GgmlType::F32 | GgmlType::Bf16 => (-20.0, 12.0),
        GgmlType::F16 => (-7.5, 4.3),
        GgmlType::Q8_1 => (-7.0, 3.0),
        _ => (-7.0, 4.3),
    }
}

/// A random row of `n` values for storage type `ty`: a row magnitude (log-uniform over the
/// format's range, or typical), varied per 32-value chunk in half the rows, and per chunk a
/// pattern: zeros, uniform, bell-shaped, one sign, constant, sparse, or one outlier.
fn gen_row(r: &mut ChaCha8Rng, n: usize, ty: GgmlType) -> Vec<f32> {
    let (lo, hi) = mag_range(ty);
    let row_mag = match r.random_range(0..4) {
        0 => r.random_range(-2.0..0.5),
        1 => lo,
        2 => hi,
        _ => r.random_range(lo..hi),
    };
    let vary = r.random_bool(0.5);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = 32.min(n - out.len());
        let mag = if vary {
            (row_mag + r.random_range(-1.5..1.5)).clamp(lo, hi)
        } else {
            row_mag
        };
        let s = 10f64.powf(mag) as f32;
        let c = r.random_range(-1.0f32..1.0);
        for _ in 0..len {
            let u: f32 = r.random_range(-1.0..1.0);
            let v = match r.random_range(0..10) {
                0 => 0.0,
                1 => u.abs(),
                2 => -u.abs(),
                3 => c,
                4 => (u + r.random_range(-1.0f32..1.0) + r.random_range(-1.0f32..1.0)) / 3.0,
                _ => u,
            };
            out.push(v * s);
        }
        // Whole chunks of zeros, of one constant, mostly zeros, or small values with one
        // outlier.
        let chunk = out.len() - len..out.len();
        match r.random_range(0..12) {
            0 => out[chunk].fill(0.0),
            1 => out[chunk].fill(c * s),
            2 => {
                for v in &mut out[chunk] {
                    if r.random_bool(0.8) {
                        *v = 0.0;
                    }
                }
            }
            3 => {
                for v in &mut out[chunk.clone()] {
                    *v *= 0.01;
                }
                let k = r.random_range(chunk);
                out[k] = s * if r.random_bool(0.5) { 1.0 } else { -1.0 };
            }
            _ => {}
        }
    }
    out
}

/// Whether [`random_blocks`] knows where `ty`'s scale fields are.
fn has_random_layout(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Nf4
    )
}

/// A random f16 of magnitude 10^U(lo, hi) and random sign, little-endian.
fn rand_f16(r: &mut ChaCha8Rng, lo: f64, hi: f64) -> [u8; 2] {
    let v = 10f64.powf(r.random_range(lo..hi)) as f32;
    let v = if r.random_bool(0.5) { v } else { -v };
    f16::from_f32(v).to_le_bytes()
}

/// Random bytes for `blocks` blocks of `ty` with sane scales: the f16 scale/min fields of every
/// block are replaced by finite values, everything else (codes, packed sub-scales) is random.
fn random_blocks(r: &mut ChaCha8Rng, ty: GgmlType, blocks: usize) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut v = vec![0u8; blocks * bb];
    r.fill(&mut v[..]);
    // (offset of an f16 field, log10 range of its magnitude)
    let fields: &[(usize, f64, f64)] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[(0, -4.0, 1.0)],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[(0, -4.0, 1.0), (2, -4.0, 1.0)],
        GgmlType::Q2K => &[(80, -4.0, 0.0), (82, -4.0, 0.0)],
        GgmlType::Q3K => &[(108, -4.0, 0.0)],
        GgmlType::Q4K | GgmlType::Q5K => &[(0, -4.0, 0.0), (2, -4.0, 0.0)],
        GgmlType::Q6K => &[(208, -4.0, 0.0)],
        GgmlType::Nf4 => &[],
        _ => panic!("no random-byte layout for {ty}"),
    };
    for b in v.chunks_exact_mut(bb) {
        for &(off, lo, hi) in fields {
            b[off..off + 2].copy_from_slice(&rand_f16(r, lo, hi));
        }
        if ty == GgmlType::Nf4 {
            let absmax = 10f32.powf(r.random_range(-4.0..1.0));
            b[32..36].copy_from_slice(&absmax.to_le_bytes());
        }
    }
    v
}

/// One weight row and one prepared activation row, with their dequantized values.
struct Case {
    ty: GgmlType,
    n: usize,
    w: Vec<u8>,
    a: Vec<u8>,
    wd: Vec<f32>,
    ad: Vec<f32>,
}

impl Case {
    /// `n` values; weights quantized from random floats, or (block formats, sometimes) random
    /// blocks with sane scales.
    fn new(r: &mut ChaCha8Rng, ty: GgmlType, n: usize) -> Self {
        let at = act_type(ty);
        let w = if is_block(ty) && r.random_bool(0.3) {
            random_blocks(r, ty, n / ty.block_len())
        } else {
            quant::quantize(ty, &gen_row(r, n, ty)).unwrap()
        };
        let a = quant::quantize(at, &gen_row(r, n, at)).unwrap();
        let wd = quant::dequantize(ty, &w, n).unwrap();
        let ad = quant::dequantize(at, &a, n).unwrap();
        Self {
            ty,
            n,
            w,
            a,
            wd,
            ad,
        }
    }

    fn blocks(&self) -> usize {
        self.n / self.ty.block_len()
    }

    /// Q4_1/Q5_1's per-block min (bytes 2..4), 0 for other formats.
    fn min(&self, block: usize) -> f64 {
        match self.ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                let b = &self.w[block * self.ty.block_bytes()..];
                f64::from(f16::from_le_bytes([b[2], b[3]]).to_f32())
            }
            _ => 0.0,
        }
    }

    /// `Σ_i w_i · a_i` over the dequantized rows, in f64 (products exact, sum to 2⁻⁵³).
    fn exact(&self) -> f64 {
        self.wd
            .iter()
            .zip(&self.ad)
            .map(|(&w, &a)| f64::from(w) * f64::from(a))
            .sum()
    }

    /// `T = Σ (|w_i − m_b| + |m_b|) · |a_i|` (see the module docs).
    fn terms(&self) -> f64 {
        let bl = self.ty.block_len();
        let mut t = 0.0;
        for (i, (&w, &a)) in self.wd.iter().zip(&self.ad).enumerate() {
            let m = self.min(i / bl);
            t += ((f64::from(w) - m).abs() + m.abs()) * f64::from(a).abs();
        }
        t
    }

    /// Bound on Q8_1's `s` fields standing in for the block sums (0 for other formats).
    fn s_error(&self) -> f64 {
        if act_type(self.ty) != GgmlType::Q8_1 {
            return 0.0;
        }
        let mut e = 0.0;
        for (b, (ad, ab)) in self
            .ad
            .chunks_exact(32)
            .zip(self.a.chunks_exact(36))
            .enumerate()
        {
            let sigma: f64 = ad.iter().map(|&v| f64::from(v)).sum();
            let sum_q: i32 = ab[4..].iter().map(|&q| i32::from(q as i8)).sum();
            let bound = 2f64.powi(-9) * sigma.abs() + f64::from(sum_q.abs() + 2) * 2f64.powi(-24);
            e += self.min(b).abs() * bound;
        }
        e
    }

    /// Roundings on the scalar kernel's longest chain.
    fn k_scalar(&self) -> usize {
        if is_block(self.ty) {
            self.blocks() + 3
        } else {
            self.n + 1
        }
    }

    /// Roundings on the AVX2 kernel's longest chain.
    fn k_simd(&self) -> usize {
        match self.ty {
            GgmlType::F32 => self.n / 32 + self.n % 32 + 8,
            GgmlType::F16 | GgmlType::Bf16 => self.n / 8 + self.n % 8 + 8,
            _ => self.blocks() + 5,
        }
    }

    /// Subnormal roundings are absolute (≤ 2⁻¹⁵⁰ each): a bound on all of them, in both
    /// kernels and the dequantization.
    fn tiny(&self) -> f64 {
        4.0 * (self.n + self.blocks() + 64) as f64 * SUB
    }

    fn describe(&self) -> String {
        let head = |b: &[u8]| {
            b.iter()
                .take(48)
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
        };
        format!(
            "{} n={} ({} blocks)\n  w[..48]={}\n  a[..48]={}",
            self.ty,
            self.n,
            self.blocks(),
            head(&self.w),
            head(&self.a)
        )
    }
}

/// Row lengths to test for `ty`: fixed edge cases plus random ones (always whole blocks).
fn lengths(r: &mut ChaCha8Rng, ty: GgmlType) -> Vec<usize> {
    let mut v: Vec<usize> = if is_block(ty) {
        let bl = ty.block_len();
        let mut v: Vec<usize> = [1, 2, 3, 7, 8, 9, 18, 48, 49]
            .iter()
            .map(|b| b * bl)
            .collect();
        v.extend((0..12).map(|_| r.random_range(1..=120) * bl));
        v
    } else {
        let mut v = vec![
            1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 576, 1536,
        ];
        v.extend((0..12).map(|_| r.random_range(1..=2500)));
        v
    };
    v.sort_unstable();
    v.dedup();
    v
}

const ROWS_PER_LENGTH: usize = 16;

fn avx2_available() -> bool {
    if cpu::detected() < Level::Avx2 {
        eprintln!("note: this CPU has no AVX2+FMA+F16C; AVX2 comparisons skipped");
        return false;
    }
    true
}

#[test]
fn direct_kernels_are_exactly_the_expected_formats() {
    for ty in GgmlType::ALL {
        let direct = DIRECT.contains(&ty) || KQUANT.contains(&ty);
        assert_eq!(dot_fn(ty, Level::Scalar).is_some(), direct, "{ty} scalar");
        assert_eq!(dot_fn(ty, Level::Avx2).is_some(), direct, "{ty} avx2");
        assert_eq!(dot_fn(ty, cpu::level()).is_some(), direct, "{ty} in use");
        assert!(direct || FALLBACK.contains(&ty), "{ty} is in neither list");
    }
    assert_eq!(act_type(GgmlType::Q4_0), GgmlType::Q8_0);
    assert_eq!(act_type(GgmlType::Q5_0), GgmlType::Q8_0);
    assert_eq!(act_type(GgmlType::Q8_0), GgmlType::Q8_0);
    assert_eq!(act_type(GgmlType::Q4_1), GgmlType::Q8_1);
    assert_eq!(act_type(GgmlType::Q5_1), GgmlType::Q8_1);
    assert_eq!(act_type(GgmlType::Q4K), GgmlType::Q8K);
    assert_eq!(act_type(GgmlType::Q6K), GgmlType::Q8K);
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::Q5K,
        GgmlType::Nf4,
    ] {
        assert_eq!(act_type(ty), GgmlType::F32, "{ty}");
    }
}

/// (a) AVX2 == scalar within the float-summation bound, for every direct format.
#[test]
fn avx2_matches_scalar() {
    if !avx2_available() {
        return;
    }
    for (f, ty) in DIRECT.into_iter().enumerate() {
        let mut r = rng(0xA0 + f as u64);
        let scalar = dot_fn(ty, Level::Scalar).unwrap();
        let simd = dot_fn(ty, Level::Avx2).unwrap();
        let (mut worst, mut used) = (0.0f64, 0.0f64); // largest |Δ| / (u·T), |Δ| / bound
        let mut cases = 0;
        for n in lengths(&mut r, ty) {
            for _ in 0..ROWS_PER_LENGTH {
                let c = Case::new(&mut r, ty, n);
                let (s, v) = (scalar(&c.w, &c.a), simd(&c.w, &c.a));
                let t = c.terms();
                let k = (c.k_scalar() + c.k_simd()) as f64;
                let bound = k * U * t * 1.01 + c.tiny();
                let diff = (f64::from(s) - f64::from(v)).abs();
                assert!(
                    s.is_finite() && v.is_finite() && diff <= bound,
                    "AVX2 != scalar: scalar {s:e}, avx2 {v:e}, |Δ| {diff:e} > bound {bound:e} \
                     (T = {t:e})\n{}",
                    c.describe()
                );
                if t > 0.0 {
                    worst = worst.max(diff / (U * t));
                }
                if bound > 0.0 {
                    used = used.max(diff / bound);
                }
                cases += 1;
            }
        }
        eprintln!(
            "{ty}: {cases} rows, worst |avx2 − scalar| = {worst:.2}·u·T, {:.1}% of the bound",
            used * 100.0
        );
    }
}

/// (b) scalar == the f64 dot product of the dequantized rows, for every direct format.
#[test]
fn scalar_matches_dequantized_rows() {
    for (f, ty) in DIRECT.into_iter().enumerate() {
        let mut r = rng(0xB0 + f as u64);
        let scalar = dot_fn(ty, Level::Scalar).unwrap();
        let (mut worst, mut used) = (0.0f64, 0.0f64);
        let mut cases = 0;
        for n in lengths(&mut r, ty) {
            for _ in 0..ROWS_PER_LENGTH {
                let c = Case::new(&mut r, ty, n);
                let s = scalar(&c.w, &c.a);
                let (want, t, se) = (c.exact(), c.terms(), c.s_error());
                let k = (c.k_scalar() + 2) as f64;
                let bound = k * U * t * 1.01 + c.tiny() + se;
                let diff = (f64::from(s) - want).abs();
                assert!(
                    s.is_finite() && diff <= bound,
                    "scalar {s:e} != dequantized dot {want:e}: |Δ| {diff:e} > bound {bound:e} \
                     (T = {t:e}, s-term {se:e})\n{}",
                    c.describe()
                );
                if t > 0.0 {
                    worst = worst.max(diff / (U * t));
                }
                if bound > 0.0 {
                    used = used.max(diff / bound);
                }
                cases += 1;
            }
        }
        eprintln!(
            "{ty}: {cases} rows, worst |scalar − dequantized| = {worst:.2}·u·T (Q8_1's s \
             included), {:.1}% of the bound",
            used * 100.0
        );
    }
}

/// (b) for the AVX2 kernels too (a consequence of (a) and (b), checked directly so a failure
/// names the kernel).
#[test]
fn avx2_matches_dequantized_rows() {
    if !avx2_available() {
        return;
    }
    for (f, ty) in DIRECT.into_iter().enumerate() {
        let mut r = rng(0xC0 + f as u64);
        let simd = dot_fn(ty, Level::Avx2).unwrap();
        for n in lengths(&mut r, ty) {
            for _ in 0..ROWS_PER_LENGTH {
                let c = Case::new(&mut r, ty, n);
                let v = simd(&c.w, &c.a);
                let (want, t) = (c.exact(), c.terms());
                let k = (c.k_simd() + 2) as f64;
                let bound = k * U * t * 1.01 + c.tiny() + c.s_error();
                let diff = (f64::from(v) - want).abs();
                assert!(
                    v.is_finite() && diff <= bound,
                    "avx2 {v:e} != dequantized dot {want:e}: |Δ| {diff:e} > {bound:e}\n{}",
                    c.describe()
                );
            }
        }
    }
}

/// Zero rows give exactly zero, and a single nonzero pair gives its product (up to the f16
/// rounding of the activation scale), at both levels: checks the value order inside a block.
#[test]
fn single_value_rows_pick_the_right_element() {
    let levels: &[Level] = if cpu::detected() >= Level::Avx2 {
        &[Level::Scalar, Level::Avx2]
    } else {
        &[Level::Scalar]
    };
    for ty in DIRECT {
        let n = if is_block(ty) { 3 * ty.block_len() } else { 45 };
        let at = act_type(ty);
        for &level in levels {
            let f = dot_fn(ty, level).unwrap();
            let zw = quant::quantize(ty, &vec![0.0; n]).unwrap();
            let za = quant::quantize(at, &vec![0.0; n]).unwrap();
            assert_eq!(f(&zw, &za), 0.0, "{ty} {level:?} zeros");
            for i in 0..n {
                // w has a 1 at i (and 0 elsewhere); a has 2 at i and 1 at the next position.
                let mut x = vec![0.0f32; n];
                x[i] = 1.0;
                let mut y = vec![0.0f32; n];
                y[i] = 2.0;
                y[(i + 1) % n] = 1.0;
                let w = quant::quantize(ty, &x).unwrap();
                let a = quant::quantize(at, &y).unwrap();
                let want = quant::dequantize(ty, &w, n).unwrap()[i]
                    * quant::dequantize(at, &a, n).unwrap()[i];
                let got = f(&w, &a);
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs(),
                    "{ty} {level:?}: one value at {i} of {n}: got {got}, want {want}"
                );
            }
        }
    }
}

/// Naive `out[t][r]` with the kernel in use: the direct kernel on quantized activations, or
/// dequantize the row and take the f32 dot product.
fn naive_matmul(ty: GgmlType, rows: usize, cols: usize, w: &[u8], x: &[f32]) -> Vec<f32> {
    let level = cpu::level();
    let rb = ty.row_bytes(cols).unwrap();
    let n = x.len() / cols;
    let mut out = vec![0.0; n * rows];
    for t in 0..n {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * rb..(r + 1) * rb];
            out[t * rows + r] = match dot_fn(ty, level) {
                Some(f) => {
                    let at = act_type(ty);
                    let mut a = vec![0u8; at.row_bytes(cols).unwrap()];
                    super::matmul::quantize_act_row(at, xt, &mut a);
                    f(wr, &a)
                }
                None => {
                    let d = quant::dequantize(ty, wr, cols).unwrap();
                    let f = dot_fn(GgmlType::F32, level).unwrap();
                    f(bytemuck::cast_slice(&d), bytemuck::cast_slice(xt))
                }
            };
        }
    }
    out
}

/// A random weight matrix: quantized from floats where the format can be, else random blocks.
fn random_matrix(r: &mut ChaCha8Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let random = !ty.can_quantize() || (has_random_layout(ty) && r.random_bool(0.3));
    let mut w = Vec::new();
    for _ in 0..rows {
        if !random {
            w.extend(quant::quantize(ty, &gen_row(r, cols, ty)).unwrap());
        } else {
            w.extend(random_blocks(r, ty, cols / ty.block_len()));
        }
    }
    w
}

fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: {g:e} != naive {w:e}"
        );
    }
}

/// (c) matmul == the naive loop bit for bit, for every format (direct and fallback), several
/// shapes, 1 and several activation rows, pools of 1 and 3 threads.
#[test]
fn matmul_matches_naive_loop() {
    let pools: Vec<rayon::ThreadPool> = [1, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let mut r = rng(0xD0);
    let mut checked = 0;
    for ty in DIRECT.into_iter().chain(KQUANT).chain(FALLBACK) {
        let bl = ty.block_len();
        let col_blocks: &[usize] = match bl {
            1 => &[1, 37, 576],
            32 => &[1, 7, 18],
            64 => &[1, 3, 9],
            _ => &[1, 3],
        };
        for &cb in col_blocks {
            let cols = cb * bl;
            for rows in [1, 5, 16, 17, 63, 100] {
                let w = random_matrix(&mut r, ty, rows, cols);
                let m = QMatrix::new(ty, rows, cols, &w).unwrap();
                for n in [1, 2, 5] {
                    // Q8_1's range keeps its `s` fields finite for Q4_1/Q5_1.
                    let x = gen_row(&mut r, n * cols, GgmlType::Q8_1);
                    let want = naive_matmul(ty, rows, cols, &w, &x);
                    for (pool, threads) in pools.iter().zip([1, 3]) {
                        let what = format!("{ty} {rows}x{cols}, {n} rows of x, {threads} threads");
                        let mut out = vec![f32::NAN; n * rows];
                        pool.install(|| matmul(&m, &x, &mut out));
                        assert_bits_eq(&out, &want, &what);
                        let acts = Acts::prepare(ty, &x, cols);
                        let mut out2 = vec![f32::NAN; n * rows];
                        pool.install(|| matmul_into(&m, &acts, &mut out2));
                        assert_bits_eq(&out2, &want, &format!("{what} (matmul_into)"));
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} matrix products checked bit for bit");
}

/// The fallback (formats without a direct kernel) is the f64 dot product of the dequantized
/// rows within the f32 bound, i.e. the dequantized matrix times f32 activations.
#[test]
fn fallback_matches_dequantized_matrix() {
    let mut r = rng(0xE0);
    for ty in FALLBACK {
        let bl = ty.block_len();
        let cols = if bl == 32 { 7 * bl } else { 3 * bl };
        let rows = 19;
        for n in [1, 4] {
            let w = random_matrix(&mut r, ty, rows, cols);
            let m = QMatrix::new(ty, rows, cols, &w).unwrap();
            let x = gen_row(&mut r, n * cols, GgmlType::F32);
            let mut out = vec![0.0; n * rows];
            matmul(&m, &x, &mut out);
            let wd = quant::dequantize(ty, &w, rows * cols).unwrap();
            for t in 0..n {
                let xt = &x[t * cols..(t + 1) * cols];
                for row in 0..rows {
                    let wr = &wd[row * cols..(row + 1) * cols];
                    let want: f64 = wr
                        .iter()
                        .zip(xt)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    let mag: f64 = wr
                        .iter()
                        .zip(xt)
                        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                        .sum();
                    // f32 kernel at either level: k ≤ cols + cols/32 + 40 roundings
                    let k = (cols + cols / 32 + 40) as f64;
                    let got = out[t * rows + row];
                    let diff = (f64::from(got) - want).abs();
                    assert!(
                        got.is_finite() && diff <= k * U * mag * 1.01 + 4.0 * k * SUB,
                        "{ty} row {row} x{t}: {got:e} vs dequantized {want:e} (Σ|t| {mag:e})"
                    );
                }
            }
        }
    }
}

/// `QMatrix::new` accepts exactly whole-block matrices of the right byte size.
#[test]
fn qmatrix_checks_its_shape() {
    let w = vec![0u8; 3 * 2 * 18];
    assert!(QMatrix::new(GgmlType::Q4_0, 3, 64, &w).is_some());
    assert!(QMatrix::new(GgmlType::Q4_0, 2, 64, &w).is_none());
    assert!(QMatrix::new(GgmlType::Q4_0, 3, 48, &w).is_none());
    assert!(QMatrix::new(GgmlType::Q4_0, 6, 32, &w).is_some());
}

/// The AVX2 kernels for Q8_0 activations multiply signed bytes with `_mm256_sign_epi8`, which
/// maps −128·(−1) to −128 (as ggml's `mul_sum_i8_pairs` does): an activation code of −128
/// facing a negative weight code would give the wrong sign. This pins the precondition: the
/// activation quantizers never emit −128 in a block whose scale is nonzero. (They do emit it
/// for rows so tiny that `1 / d` overflows to infinity, amax ≲ 4·10⁻³⁷, but then the f16 scale
/// is 0 and the block contributes 0 at both levels, which the second half checks.)
#[test]
fn activation_codes_avoid_minus_128() {
    let mut r = rng(0xF0);
    let mut blocks = 0;
    for at in [GgmlType::Q8_0, GgmlType::Q8_1] {
        let off = if at == GgmlType::Q8_0 { 2 } else { 4 };
        for k in 0..4000 {
            let mut x = gen_row(&mut r, 64, GgmlType::F32);
            // exact ±amax, subnormal and near-overflow rows, huge dynamic range
            match k % 5 {
                0 => x[r.random_range(0..64)] = -x.iter().fold(0.0f32, |m, v| m.max(v.abs())),
                1 => x.iter_mut().for_each(|v| *v *= 1e-30),
                2 => x.iter_mut().for_each(|v| *v = v.signum() * 1e-40),
                3 => x.iter_mut().for_each(|v| *v *= 1e25),
                _ => {}
            }
            let q = quant::quantize(at, &x).unwrap();
            for b in q.chunks_exact(at.block_bytes()) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                assert!(
                    d == 0.0 || !b[off..].contains(&0x80),
                    "{at}: a −128 code with scale {d:e} from {x:?}"
                );
                blocks += 1;
            }
        }
    }
    assert!(blocks > 0);
    if !avx2_available() {
        return;
    }
    // Tiny rows: −128 codes appear, scale 0, and both levels give exactly 0.
    let x: Vec<f32> = (0..64)
        .map(|i| if i % 3 == 0 { -1e-40 } else { 1e-40 })
        .collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        let a = quant::quantize(act_type(ty), &x).unwrap();
        assert!(
            a.contains(&0x80) && a[..2] == [0, 0],
            "{ty}: the tiny row's codes"
        );
        let w = random_blocks(&mut r, ty, 2);
        let s = dot_fn(ty, Level::Scalar).unwrap()(&w, &a);
        let v = dot_fn(ty, Level::Avx2).unwrap()(&w, &a);
        assert_eq!((s, v), (0.0, 0.0), "{ty}");
    }
}

/// The AVX2 matrix kernels ([`avx2::gemm`] through [`matmul_many`]: one activation row, tiles
/// of several, and every tail) equal the AVX2 dot product of each pair bit for bit (which (a)
/// ties to the scalar reference), for Q4_0, Q4_1 and Q8_0 weights quantized from floats or
/// random blocks (Q8_0 codes of −128 included), several matrices in one call, sharing one
/// prepared input or not, in pools of 1, 2 and 3 threads.
#[test]
fn gemm_matches_dot_products_bit_for_bit() {
    if !avx2_available() || cpu::level() < Level::Avx2 {
        eprintln!("note: no AVX2+FMA+F16C here; the scalar path is what (c) checks");
        return;
    }
    let pools = pools_of(&[1, 2, 3]);
    let mut r = rng(0xE1);
    let mut checked = 0;
    for (ty, other) in [
        (GgmlType::Q4_0, GgmlType::Q8_0),
        (GgmlType::Q4_1, GgmlType::Q4_0),
        (GgmlType::Q8_0, GgmlType::Q4_1),
        (GgmlType::Q5_0, GgmlType::Q4_0),
    ] {
        for cb in [1, 7, 18, 48] {
            let cols = cb * 32;
            for rows in [1, 3, 4, 5, 13, 64] {
                let w1 = random_matrix(&mut r, ty, rows, cols);
                let w2 = random_matrix(&mut r, ty, rows + 3, cols);
                let w3 = random_matrix(&mut r, other, 9, cols);
                for n in [1, 2, 3, 4, 5, 8, 9, 17] {
                    let x = gen_row(&mut r, n * cols, GgmlType::Q8_1);
                    let mats = [
                        QMatrix::new(ty, rows, cols, &w1).unwrap(),
                        QMatrix::new(ty, rows + 3, cols, &w2).unwrap(),
                        QMatrix::new(other, 9, cols, &w3).unwrap(),
                    ];
                    let want: Vec<Vec<f32>> = mats.iter().map(|m| avx2_naive(m, &x)).collect();
                    let (a, b) = (Acts::prepare(ty, &x, cols), Acts::prepare(other, &x, cols));
                    for (threads, pool) in &pools {
                        let outs = many_in(pool, &mats, n, |m| if m.ty == ty { &a } else { &b });
                        for (k, (got, want)) in outs.iter().zip(&want).enumerate() {
                            let what = format!(
                                "{ty}/{other} matrix {k}: {rows}x{cols}, {n} rows of x, \
                                 {threads} threads"
                            );
                            assert_bits_eq(got, want, &what);
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} multi-matrix products checked bit for bit");
}

/// Rayon pools of the given thread counts, with their counts.
fn pools_of(threads: &[usize]) -> Vec<(usize, rayon::ThreadPool)> {
    threads
        .iter()
        .map(|&t| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t);
            (t, pool.build().unwrap())
        })
        .collect()
}

/// Every matrix of `mats` times its activations (`n` rows, from `acts_of`) in one
/// [`matmul_many`] call on `pool`; outputs start as NaN so a missed element shows.
fn many_in<'a>(
    pool: &rayon::ThreadPool,
    mats: &[QMatrix],
    n: usize,
    acts_of: impl Fn(&QMatrix) -> &'a Acts,
) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![f32::NAN; n * m.rows]).collect();
    let mut jobs: Vec<MatJob> = mats
        .iter()
        .zip(&mut outs)
        .map(|(m, out)| MatJob {
            w: *m,
            acts: acts_of(m),
            out,
        })
        .collect();
    pool.install(|| matmul_many(&mut jobs));
    outs
}

/// `out[t][r]` with the AVX2 dot product of each pair.
fn avx2_naive(m: &QMatrix, x: &[f32]) -> Vec<f32> {
    naive_at(Level::Avx2, m, x)
}

/// `out[t][r]` with the dot product of each pair at `level`.
fn naive_at(level: Level, m: &QMatrix, x: &[f32]) -> Vec<f32> {
    let f = dot_fn(m.ty, level).unwrap();
    let at = act_type(m.ty);
    let mut a = vec![0u8; at.row_bytes(m.cols).unwrap()];
    let n = x.len() / m.cols;
    let mut out = vec![0.0; n * m.rows];
    for (t, xt) in x.chunks_exact(m.cols).enumerate() {
        super::matmul::quantize_act_row(at, xt, &mut a);
        for r in 0..m.rows {
            out[t * m.rows + r] = f(m.row(r), &a);
        }
    }
    out
}

/// The spinning team runs every task exactly once, in pools of 1 to 4 threads, nested calls
/// (which fall back to rayon) included, and a panic in a task reaches the caller and leaves
/// the team usable.
#[test]
fn pool_runs_every_task_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for threads in 1..=4 {
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        p.install(|| {
            for tasks in [0, 1, 2, 3, 7, 100, 1000] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                let inner = AtomicUsize::new(0);
                pool::run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                    if i % 17 == 0 {
                        pool::run(3, &|_| {
                            inner.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                assert_eq!(inner.load(Ordering::Relaxed), 3 * tasks.div_ceil(17));
                let mut v = vec![0usize; tasks];
                pool::for_each_chunk(&mut v, 3, &|c, piece| {
                    for (k, e) in piece.iter_mut().enumerate() {
                        *e += c * 3 + k;
                    }
                });
                assert!(v.iter().enumerate().all(|(i, &e)| i == e));
            }
            let caught = std::panic::catch_unwind(|| {
                pool::run(50, &|i| assert!(i != 31, "task 31 fails"));
            });
            assert!(
                caught.is_err(),
                "{threads} threads: the panic reaches the caller"
            );
            let count = AtomicUsize::new(0);
            pool::run(64, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), 64);
        });
    }
}

/// The interleaved Q4_0 layout ([`Q4_0x16`]) keeps every row: each row read back in Q4_0's
/// layout is the original row, byte for byte; shapes it cannot hold are refused.
#[test]
fn interleaved_q4_0_keeps_every_row() {
    let mut r = rng(0xF0);
    for (rows, cb) in [(16, 1), (32, 7), (48, 18)] {
        let w = random_matrix(&mut r, GgmlType::Q4_0, rows, cb * 32);
        let m = QMatrix::new(GgmlType::Q4_0, rows, cb * 32, &w).unwrap();
        let p = Q4_0x16::pack(&m).unwrap();
        assert_eq!(p.bytes(), w.len(), "same size as the Q4_0 rows");
        for i in 0..rows {
            assert_eq!(p.row_q4_0(i), m.row(i), "row {i} of {rows}x{}", cb * 32);
        }
        assert!(m.with_packed(&p).is_some());
    }
    let w = random_matrix(&mut r, GgmlType::Q4_0, 17, 64);
    assert!(Q4_0x16::pack(&QMatrix::new(GgmlType::Q4_0, 17, 64, &w).unwrap()).is_none());
    let w8 = random_matrix(&mut r, GgmlType::Q8_0, 16, 64);
    assert!(Q4_0x16::pack(&QMatrix::new(GgmlType::Q8_0, 16, 64, &w8).unwrap()).is_none());
    let a = random_matrix(&mut r, GgmlType::Q4_0, 16, 64);
    let b = random_matrix(&mut r, GgmlType::Q4_0, 32, 64);
    let pb = Q4_0x16::pack(&QMatrix::new(GgmlType::Q4_0, 32, 64, &b).unwrap()).unwrap();
    let ma = QMatrix::new(GgmlType::Q4_0, 16, 64, &a).unwrap();
    assert!(
        ma.with_packed(&pb).is_none(),
        "another shape's rows are refused"
    );
}

/// (c) for the AVX-512 VNNI kernels: products over interleaved Q4_0 rows equal the *scalar*
/// reference dot product of every pair bit for bit (their float steps are the scalar ones),
/// for 1 to 19 activation rows (every tile width and tail), several matrices sharing one
/// prepared input, pools of 1, 2 and 3 threads. Skipped, with a note, below AVX-512 VNNI.
#[test]
fn interleaved_q4_0_matches_scalar_bit_for_bit() {
    if cpu::level() < Level::Avx512 {
        eprintln!("note: no AVX-512 VNNI here (or FEDTUNE_KERNELS lowers it); skipped");
        return;
    }
    let pools = pools_of(&[1, 2, 3]);
    let mut r = rng(0xF1);
    let mut checked = 0;
    for cb in [1, 7, 18, 48] {
        let cols = cb * 32;
        for rows in [16, 48, 192] {
            let w1 = random_matrix(&mut r, GgmlType::Q4_0, rows, cols);
            let w2 = random_matrix(&mut r, GgmlType::Q4_0, 64, cols);
            let m1 = QMatrix::new(GgmlType::Q4_0, rows, cols, &w1).unwrap();
            let m2 = QMatrix::new(GgmlType::Q4_0, 64, cols, &w2).unwrap();
            let (p1, p2) = (Q4_0x16::pack(&m1).unwrap(), Q4_0x16::pack(&m2).unwrap());
            let mats = [m1.with_packed(&p1).unwrap(), m2.with_packed(&p2).unwrap()];
            for n in [1, 2, 3, 4, 5, 8, 9, 15, 19] {
                let x = gen_row(&mut r, n * cols, GgmlType::Q8_1);
                let want: Vec<Vec<f32>> = mats.iter().map(|m| scalar_naive(m, &x)).collect();
                let acts = Acts::prepare(GgmlType::Q4_0, &x, cols);
                for (threads, pool) in &pools {
                    let outs = many_in(pool, &mats, n, |_| &acts);
                    for (k, (got, want)) in outs.iter().zip(&want).enumerate() {
                        let what =
                            format!("matrix {k}: {cols} cols, {n} rows of x, {threads} threads");
                        assert_bits_eq(got, want, &what);
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} interleaved products checked bit for bit against the scalar kernel");
}

/// The AVX2 and AVX-512 kernels for interleaved rows, each called directly, equal the scalar
/// reference bit for bit; levels this CPU lacks (or `FEDTUNE_KERNELS` lowers) are skipped with
/// a note.
#[test]
fn interleaved_kernels_of_every_level_match_scalar() {
    let mut r = rng(0xF2);
    let mut checked = 0;
    for level in [Level::Avx2, Level::Avx512] {
        if cpu::level() < level {
            eprintln!(
                "note: this CPU lacks {} (or FEDTUNE_KERNELS lowers it): its interleaved \
                 kernel is not checked",
                level.name()
            );
            continue;
        }
        for (rows, cb) in [(16, 1), (32, 7), (64, 18), (48, 48)] {
            let cols = cb * 32;
            let w = random_matrix(&mut r, GgmlType::Q4_0, rows, cols);
            let m = QMatrix::new(GgmlType::Q4_0, rows, cols, &w).unwrap();
            let p = Q4_0x16::pack(&m).unwrap();
            let m = m.with_packed(&p).unwrap();
            for n in [1, 2, 3, 4, 7, 8, 13] {
                let x = gen_row(&mut r, n * cols, GgmlType::Q8_1);
                let acts = Acts::prepare(GgmlType::Q4_0, &x, cols);
                let mut out = vec![f32::NAN; n * rows];
                super::matmul::interleaved_at(level, &m, &acts, &mut out);
                let what = format!("{} {rows}x{cols}, {n} rows of x", level.name());
                assert_bits_eq(&out, &scalar_naive(&m, &x), &what);
                checked += 1;
            }
        }
    }
    eprintln!("{checked} interleaved products checked against the scalar kernel");
}

/// `out[t][r]` with the scalar dot product of each pair.
fn scalar_naive(m: &QMatrix, x: &[f32]) -> Vec<f32> {
    naive_at(Level::Scalar, m, x)
}

/// Q4_K/Q6_K · Q8_K: the direct kernel against the f64 dot product of the dequantized rows
/// (|Δ| within 1e-6 of Σ|w·a|: the integer sums are exact, and each block adds a few f32
/// roundings), and the AVX2 build of the kernel equal to the scalar one bit for bit.
#[test]
fn kquant_kernels_match_dequantized_rows_and_agree_bit_for_bit() {
    let avx2 = avx2_available();
    for (f, ty) in KQUANT.into_iter().enumerate() {
        let mut r = rng(0xF0 + f as u64);
        let scalar = dot_fn(ty, Level::Scalar).unwrap();
        let simd = dot_fn(ty, Level::Avx2).unwrap();
        let mut worst = 0.0f64;
        for blocks in [1, 2, 3, 5, 10] {
            let n = blocks * 256;
            for _ in 0..40 {
                let w = random_blocks(&mut r, ty, blocks);
                let a =
                    quant::quantize(GgmlType::Q8K, &gen_row(&mut r, n, GgmlType::Q8_0)).unwrap();
                let wd = quant::dequantize(ty, &w, n).unwrap();
                let ad = quant::dequantize(GgmlType::Q8K, &a, n).unwrap();
                let (exact, terms) =
                    wd.iter()
                        .zip(&ad)
                        .fold((0.0f64, 0.0f64), |(e, t), (&x, &y)| {
                            let p = f64::from(x) * f64::from(y);
                            (e + p, t + p.abs())
                        });
                let got = scalar(&w, &a);
                let diff = (f64::from(got) - exact).abs();
                assert!(
                    got.is_finite() && diff <= 1e-6 * terms + 1e-30,
                    "{ty}, {blocks} blocks: kernel {got:e}, dequantized {exact:e}, Σ|w·a| {terms:e}"
                );
                if terms > 0.0 {
                    worst = worst.max(diff / terms);
                }
                if avx2 {
                    let v = simd(&w, &a);
                    assert_eq!(
                        v.to_bits(),
                        got.to_bits(),
                        "{ty}: AVX2 {v:e} != scalar {got:e}"
                    );
                    // Four activation rows at once: each the one-row result.
                    let others: Vec<Vec<u8>> = (0..3)
                        .map(|_| {
                            quant::quantize(GgmlType::Q8K, &gen_row(&mut r, n, GgmlType::Q8_0))
                                .unwrap()
                        })
                        .collect();
                    let rows = [&a[..], &others[0], &others[1], &others[2]];
                    let four = dot4_fn(ty, Level::Avx2).unwrap()(&w, rows);
                    for (k, (v4, row)) in four.iter().zip(rows).enumerate() {
                        let one = scalar(&w, row);
                        assert_eq!(v4.to_bits(), one.to_bits(), "{ty}: row {k} of four");
                    }
                }
            }
        }
        eprintln!("{ty}: worst |kernel − dequantized| = {worst:.2e}·Σ|w·a|");
    }
}

/// A single nonzero activation picks out the weight at its position, in every block position:
/// checks the order of values and scales inside a K-quant block.
#[test]
fn kquant_single_activation_picks_its_weight() {
    let mut r = rng(0xF8);
    for ty in KQUANT {
        let f = dot_fn(ty, cpu::level()).unwrap();
        let n = 2 * 256;
        let w = random_blocks(&mut r, ty, 2);
        let wd = quant::dequantize(ty, &w, n).unwrap();
        for i in 0..n {
            let mut x = vec![0.0f32; n];
            x[i] = 1.0;
            let a = quant::quantize(GgmlType::Q8K, &x).unwrap();
            let got = f(&w, &a);
            assert!(
                (got - wd[i]).abs() <= 1e-5 * wd[i].abs() + 1e-30,
                "{ty}: position {i}: got {got:e}, weight {:e}",
                wd[i]
            );
        }
    }
}

/// The training products' row decoder ([`super::dequant`]) equals the reference bit for bit,
/// for every format and random blocks (f16 scales and minimums of every sign and magnitude).
#[test]
fn dequant_rows_match_the_reference_bit_for_bit() {
    if !avx2_available() {
        return;
    }
    let mut r = rng(31);
    for ty in DIRECT.into_iter().chain(KQUANT).chain(FALLBACK) {
        for blocks in [1, 2, 7, 36] {
            let n = if is_block(ty) {
                blocks * ty.block_len()
            } else {
                blocks * 32
            };
            let bytes = if has_random_layout(ty) {
                random_blocks(&mut r, ty, blocks)
            } else {
                quant::quantize(ty, &gen_row(&mut r, n, ty)).unwrap()
            };
            let mut want = vec![0f32; n];
            let mut got = vec![f32::NAN; n];
            quant::dequantize_row(ty, &bytes, &mut want).unwrap();
            dequant::dequantize_row(ty, &bytes, &mut got).unwrap();
            assert_bits_eq(&got, &want, &format!("{ty:?}, {blocks} blocks"));
        }
        // A length that is not whole blocks is refused, not read past.
        if is_block(ty) {
            let bytes = vec![0u8; ty.block_bytes()];
            let mut out = vec![0f32; ty.block_len() + 1];
            assert!(dequant::dequantize_row(ty, &bytes, &mut out).is_err());
        }
    }
}
