//! Log-space arithmetic for the accountant: sums of terms that would over- or underflow.

/// log(eˣ + eʸ).
pub(crate) fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// log|eˣ − eʸ| and whether eˣ ≥ eʸ.
pub(crate) fn log_sub_sign(x: f64, y: f64) -> (bool, f64) {
    if x > y {
        (true, x + (-(y - x).exp()).ln_1p())
    } else if x < y {
        (false, y + (-(x - y).exp()).ln_1p())
    } else {
        (true, f64::NEG_INFINITY)
    }
}

/// log|Γ(x + 1) / (Γ(k + 1) Γ(x − k + 1))|: the binomial coefficient for real x.
pub(crate) fn log_comb(n: f64, k: f64) -> f64 {
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
}

/// log|Γ(x)|.
fn ln_gamma(x: f64) -> f64 {
    libm::lgamma_r(x).0
}

/// log(erfc(x)), accurate where erfc(x) itself underflows.
pub(crate) fn log_erfc(x: f64) -> f64 {
    let r = libm::erfc(x);
    if x < 20.0 || r > 1e-280 {
        return r.ln();
    }
    // Asymptotic series at infinity: erfc(x) ~ e^(−x²) / (x √π) · (1 − 1/(2x²) + 3/(4x⁴) − …).
    let x2 = x * x;
    let series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2)
        + 105.0 / (16.0 * x2 * x2 * x2 * x2);
    -x2 - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sums_and_binomials() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.abs().max(1.0);
        assert!(close(log_add(2f64.ln(), 3f64.ln()), 5f64.ln()));
        assert_eq!(log_add(f64::NEG_INFINITY, 1.0), 1.0);
        let (pos, mag) = log_sub_sign(2f64.ln(), 5f64.ln());
        assert!(!pos && close(mag, 3f64.ln()));
        assert!(close(log_comb(10.0, 3.0), 120f64.ln()));
        assert!(close(
            log_comb(1024.0, 512.0).exp().ln(),
            log_comb(1024.0, 512.0)
        ));
        // Where erfc is still representable both branches agree.
        let direct = libm::erfc(19.0).ln();
        let x: f64 = 19.0;
        let x2 = x * x;
        let series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2.powi(3))
            + 105.0 / (16.0 * x2.powi(4));
        let asym = -x2 - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln();
        assert!((direct - asym).abs() < 1e-9, "{direct} vs {asym}");
        assert!(log_erfc(40.0).is_finite() && log_erfc(40.0) < -1600.0);
    }
}
