//! Sampling a fixed-size cohort without replacement (q = m / n), with replace-one neighbours:
//! Wang, Balle, Kasiviswanathan 2019, "Subsampled Rényi Differential Privacy and Analytical
//! Moments Accountant", Theorem 27, computed exactly up to order 256 and with its cruder
//! per-term bound above; fractional orders interpolate the integer ones (their Corollary 10).

use super::integer;
use crate::logmath::{log_add, log_comb, log_sub_sign};

/// Orders above this use the O(α) bound instead of the O(α²) forward differences.
const MAX_EXACT_ORDER: u32 = 256;

/// RDP at order `alpha` of the Gaussian mechanism with noise multiplier `z` (relative to the
/// replace-one sensitivity), run on a fixed-size sample drawn without replacement at rate `q`.
pub fn fixed_subsampled_gaussian(q: f64, z: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if z == 0.0 || alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * z * z);
    }
    match integer(alpha) {
        Some(1) => 0.0,
        Some(a) => log_a_int(q, z, a) / (alpha - 1.0),
        None => {
            let (lo, hi) = (alpha.floor(), alpha.ceil());
            let (x, y) = (log_a_int(q, z, lo as u32), log_a_int(q, z, hi as u32));
            let t = alpha - lo;
            ((1.0 - t) * x + t * y) / (alpha - 1.0)
        }
    }
}

/// log A_α of Theorem 27 for an integer order.
fn log_a_int(q: f64, sigma: f64, alpha: u32) -> f64 {
    if alpha == 1 {
        return 0.0;
    }
    let (ln2, ln4, log_q) = (2f64.ln(), 4f64.ln(), q.ln());
    let s2 = sigma * sigma;
    let cgf = |x: f64| x * (x + 1.0) / (2.0 * s2);
    let rdp = |x: f64| x / (2.0 * s2);
    let a = f64::from(alpha);
    let log_f2m1 = rdp(2.0) + (-(-rdp(2.0)).exp()).ln_1p();
    let first = 2.0 * log_q + log_comb(a, 2.0) + (ln4 + log_f2m1).min(rdp(2.0) + ln2);
    let mut log_a = log_add(0.0, first);
    if alpha <= MAX_EXACT_ORDER {
        let deltas = forward_differences(cgf, alpha as usize);
        for i in 3..=alpha as usize {
            let lo = deltas[2 * (i / 2) - 1];
            let hi = deltas[2 * i.div_ceil(2) - 1];
            let fi = i as f64;
            let s = (ln4 + 0.5 * (lo + hi)).min(ln2 + cgf(fi - 1.0));
            log_a = log_add(log_a, s + fi * log_q + log_comb(a, fi));
        }
    } else {
        for i in 3..=alpha {
            let fi = f64::from(i);
            log_a = log_add(log_a, ln2 + cgf(fi - 1.0) + fi * log_q + log_comb(a, fi));
        }
    }
    log_a
}

/// log|Δⁱ exp(f)(0)| for i in 0..n+2: forward differences of exp∘f in log space with signs
/// (WBK19 Theorem 27), computed exactly as `dp-accounting` does, including its leading 1.
fn forward_differences(f: impl Fn(f64) -> f64, n: usize) -> Vec<f64> {
    let mut values = vec![0.0; n + 3];
    let mut positive = vec![true; n + 3];
    for (i, v) in values.iter_mut().enumerate().skip(1) {
        *v = f((i - 1) as f64);
    }
    (0..n + 2)
        .map(|i| {
            diff_in_place(&mut values, &mut positive, n + 2 - i);
            values[0]
        })
        .collect()
}

/// Replaces the first `n` entries of a signed log-magnitude vector by its differences
/// v[j+1] − v[j].
fn diff_in_place(v: &mut [f64], positive: &mut [bool], n: usize) {
    for j in 0..n {
        if positive[j] == positive[j + 1] {
            let (sign, mag) = log_sub_sign(v[j + 1], v[j]);
            positive[j] = if positive[j + 1] { sign } else { !sign };
            v[j] = mag;
        } else {
            v[j] = log_add(v[j], v[j + 1]);
            positive[j] = positive[j + 1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_interpolation() {
        assert_eq!(fixed_subsampled_gaussian(1.0, 2.0, 8.0), 1.0);
        assert_eq!(fixed_subsampled_gaussian(0.0, 2.0, 8.0), 0.0);
        assert_eq!(fixed_subsampled_gaussian(0.5, 1.0, 1.0), 0.0);
        let (lo, hi) = (
            fixed_subsampled_gaussian(0.01, 1.0, 3.0) * 2.0,
            fixed_subsampled_gaussian(0.01, 1.0, 4.0) * 3.0,
        );
        let mid = fixed_subsampled_gaussian(0.01, 1.0, 3.25) * 2.25;
        assert!((mid - (0.75 * lo + 0.25 * hi)).abs() < 1e-12 * hi, "{mid}");
        // Subsampling helps: well under the unsampled α/(2z²).
        assert!(fixed_subsampled_gaussian(0.01, 1.0, 8.0) < 0.1 * 4.0);
        assert!(fixed_subsampled_gaussian(0.01, 1.0, 512.0).is_finite());
    }
}
