//! Scalar emulations of the float arithmetic of ggml's CPU backend (x86-64 AVX2 + FMA build,
//! as llama.cpp's batched prompt path runs it).
//!
//! A deep model amplifies last-bit differences through the 8-bit activation quantization of
//! the next matrix product, so matching llama.cpp's logits needs its exact operation order, not
//! just the same formulas. SIMD lanes are independent, so each lane is emulated with scalar f32
//! arithmetic (`mul_add` where ggml uses an FMA) and the horizontal sums in ggml's pairing.
//! The results do not depend on the CPU: callers compile their hot loops a second time with
//! AVX2 + FMA enabled and pick that copy when [`use_fma`] says so, only because a software
//! `fmaf` is slow.

/// `x·y + z` with one rounding, as `_mm256_fmadd_ps`.
#[inline(always)]
fn fma(x: f32, y: f32, z: f32) -> f32 {
    x.mul_add(y, z)
}

/// Whether to run the emulations with hardware FMA (the kernels' AVX2 level): `mul_add` is
/// then one instruction instead of a call to a software `fmaf`, with the same result.
#[inline]
pub fn use_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::kernels::cpu::level() >= crate::kernels::Level::Avx2;
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// One lane of `ggml_v_expf` (vec.h, AVX2): ggml's vectorized `expf`, a degree-5 polynomial
/// after range reduction by ln 2 (within 1.5 ulp, so it differs from libm's `expf`).
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23: adding it rounds to an integer.
    let log2e = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
    let ln2_hi = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
    let ln2_lo = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
    let z = fma(x, log2e, r);
    let n = z - r;
    // `fnmadd(a, b, c)` = c - a·b with one rounding.
    let b = fma(-n, ln2_lo, fma(-n, ln2_hi, x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let c = f32::from_bits;
    let j = fma(
        fma(
            fma(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            fma(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        c(0x3f7f_fff6) * b,
    );
    if n.abs() <= 126.0 || n.is_nan() {
        return fma(j, k, k);
    }
    // |n| > 126: scale in two steps so the result saturates to 0 or +inf.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        fma(s2, j, s2) * s1
    }
}

/// One lane of `ggml_v_silu` (vec.h): `x / (1 + v_expf(0 - x))`.
#[inline(always)]
pub fn v_silu(x: f32) -> f32 {
    x / (1.0 + v_expf(0.0 - x))
}

/// `ggml_silu_f32` (vec.h), libm's `expf`: ggml's path for elements after the last group of 8.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// ggml's tanh GELU of one value (`ggml_gelu_f32`, with the FMA GCC contracts
/// `1 + a·x·x` into).
fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const GELU_COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (GELU_COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// ggml's table of [`gelu`] at every f16 value, rounded to f16 (`ggml_table_gelu_f16`).
fn gelu_table() -> &'static [half::f16] {
    static TABLE: std::sync::OnceLock<Vec<half::f16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|i| half::f16::from_f32(gelu(half::f16::from_bits(i).to_f32())))
            .collect()
    })
}

/// `g ← gelu(g)·u` over one row, as `ggml_vec_geglu_f32` (GGML_GELU_FP16): 0 at or below
/// −10, the identity at or above 10, else the table at `g` rounded to f16.
pub fn geglu_row(g: &mut [f32], u: &[f32]) {
    let table = gelu_table();
    for (g, &u) in g.iter_mut().zip(u) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[usize::from(half::f16::from_f32(x).to_bits())].to_f32() * u
        };
    }
}

/// `g ← silu(g)·u` over one row, as `ggml_vec_swiglu_f32`: groups of 8 from the row start go
/// through [`v_silu`], the tail through [`silu`].
pub fn swiglu_row(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if use_fma() {
        #[target_feature(enable = "avx2,fma")]
        fn with_fma(g: &mut [f32], u: &[f32]) {
            swiglu_row_impl(g, u);
        }
        // SAFETY: `use_fma` holds only on CPUs with AVX2 and FMA.
        #[allow(unsafe_code)]
        return unsafe { with_fma(g, u) };
    }
    swiglu_row_impl(g, u);
}

#[inline(always)]
fn swiglu_row_impl(g: &mut [f32], u: &[f32]) {
    let full = g.len().min(u.len()) / 8 * 8;
    let (gv, gt) = g.split_at_mut(full);
    let (uv, ut) = u.split_at(full);
    for (a, &b) in gv.iter_mut().zip(uv) {
        *a = v_silu(*a) * b;
    }
    for (a, &b) in gt.iter_mut().zip(ut) {
        *a = silu(*a) * b;
    }
}

/// The horizontal sum of an `__m256` as ggml and llamafile's sgemm write it: high half + low
/// half, then `movehl` (lanes 0+2, 1+3), then `movehdup` (the two results).
#[inline(always)]
pub fn hsum8(v: &[f32; 8]) -> f32 {
    let h = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (h[0] + h[2]) + (h[1] + h[3])
}

/// `ggml_vec_dot_f32` (vec.cpp, AVX2): four 8-lane FMA accumulators over steps of 32, reduced
/// pairwise (0+2, 1+3, then 0+1), the 128-bit halves added and summed with two `hadd`s; the
/// elements after the last full step are then added one by one.
#[inline(always)]
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (xs, xt) = x[..n].as_chunks::<32>();
    let (ys, yt) = y[..n].as_chunks::<32>();
    // acc[8·j + l]: lane l of accumulator j.
    let mut acc = [0f32; 32];
    for (xc, yc) in xs.iter().zip(ys) {
        for i in 0..32 {
            acc[i] = fma(xc[i], yc[i], acc[i]);
        }
    }
    // Opaque to the optimizer: otherwise it reshapes the loop above around this reduction
    // into 2-lane pieces, several times slower than four 8-lane FMAs.
    let acc = std::hint::black_box(acc);
    let mut s = [0f32; 8];
    for l in 0..8 {
        s[l] = (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]);
    }
    let t = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    // The sum is a `ggml_float` (f64) from here on: the leftovers' f32 products are added
    // to it in f64, and it is rounded to f32 once at the end.
    let mut sum = f64::from((t[0] + t[1]) + (t[2] + t[3]));
    for (a, b) in xt.iter().zip(yt) {
        sum += f64::from(a * b);
    }
    sum as f32
}

/// One output of llamafile's tinyBLAS sgemm (AVX2, F32): one 8-lane FMA accumulator over the
/// row in steps of 8, then [`hsum8`]. `x.len()` must be a multiple of 8.
#[inline(always)]
pub fn sgemm_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (xc, yc) in x.as_chunks::<8>().0.iter().zip(y.as_chunks::<8>().0) {
        for l in 0..8 {
            acc[l] = fma(xc[l], yc[l], acc[l]);
        }
    }
    hsum8(&acc)
}

/// The dot product ggml's CPU `mul_mat` forms for one row of an F32 matrix and one F32
/// activation row in a batch: llamafile's sgemm when the row length is a multiple of 8,
/// else `ggml_vec_dot_f32`.
#[inline(always)]
pub fn mul_mat_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    if x.len().is_multiple_of(8) {
        sgemm_dot_f32(x, y)
    } else {
        vec_dot_f32(x, y)
    }
}

/// Softmax of one row of scaled scores in place, as `ggml_compute_forward_soft_max_f32`: the
/// max, [`v_expf`] of the differences, their sum per group of 8 ([`hsum8`]) accumulated in
/// f64, then a multiplication by the f32 reciprocal. `lane0` is the row's first column in
/// ggml's row (its groups of 8 start at column 0; the columns before are masked, so zero).
#[inline(always)]
pub fn soft_max(x: &mut [f32], lane0: usize) {
    let mut max = f32::NEG_INFINITY;
    for &v in x.iter() {
        max = max.max(v);
    }
    for v in x.iter_mut() {
        *v = v_expf(*v - max);
    }
    // The first group is partial when `lane0` is not a multiple of 8.
    let head = ((8 - lane0 % 8) % 8).min(x.len());
    let mut first = [0f32; 8];
    first[8 - head..].copy_from_slice(&x[..head]);
    let mut sum = f64::from(hsum8(&first));
    let (groups, tail) = x[head..].as_chunks::<8>();
    for g in groups {
        sum += f64::from(hsum8(g));
    }
    if !tail.is_empty() {
        let mut last = [0f32; 8];
        last[..tail.len()].copy_from_slice(tail);
        sum += f64::from(hsum8(&last));
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_close_to_expf_and_saturates() {
        // The normal range (below about -87.3 the result is subnormal, off by whole ulps).
        for i in -1740..=1760 {
            let x = i as f32 * 0.05;
            let (a, b) = (v_expf(x), x.exp());
            assert!((a - b).abs() <= 2.0 * f32::EPSILON * b, "{x}: {a} vs {b}");
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(-200.0), 0.0);
        assert_eq!(v_expf(100.0), f32::INFINITY);
        assert_eq!(v_expf(0.0), 1.0);
    }

    #[test]
    fn dot_and_softmax_agree_with_plain_arithmetic() {
        let x: Vec<f32> = (0..70).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = (0..70).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert!((vec_dot_f32(&x, &y) - plain).abs() < 1e-4);
        let mut s = x.clone();
        soft_max(&mut s, 3);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let mut g = x.clone();
        swiglu_row(&mut g, &y);
        for ((g, a), b) in g.iter().zip(&x).zip(&y) {
            assert!((g - a / (1.0 + (-a).exp()) * b).abs() < 1e-6);
        }
    }
}
