//! FedYogi (Reddi et al., 2021): v ← v − (1 − β₂)·Δ²·sign(v − Δ²), so v grows no faster
//! than additively; step η (Flower applies no bias correction here). Flower's defaults:
//! eta 0.01, eta_l 0.0316, beta_1 0.9, beta_2 0.99, tau 1e-3.

use super::StrategyError;
use super::fedopt::{FedOpt, FedOptParams, Rule};
use super::params::Params;

pub const FEDYOGI: Rule = Rule {
    name: "fedyogi",
    defaults: FedOptParams {
        eta: 1e-2,
        eta_l: 0.0316,
        beta_1: 0.9,
        beta_2: 0.99,
        tau: 1e-3,
    },
    betas: true,
    second_moment: |p, v, d| {
        let d2 = d * d;
        v - (1.0 - p.beta_2) * d2 * sign(v - d2)
    },
    step_size: |p, _| p.eta,
};

/// NumPy's `sign`: 0 at 0 (Rust's `signum` gives ±1).
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

pub fn fedyogi(params: &Params) -> Result<FedOpt, StrategyError> {
    FedOpt::new(FEDYOGI, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Strategy;
    use crate::strategy::fedopt::tests::{mean, model, restart_is_bit_identical};

    #[test]
    fn second_moment_follows_the_sign_rule() {
        let p = FEDYOGI.defaults;
        // v < Δ²: grows by (1−β₂)Δ²; v > Δ²: shrinks by it; v = Δ²: stays.
        assert!(((FEDYOGI.second_moment)(&p, 0.0, 2.0) - 0.04).abs() < 1e-12);
        assert!(((FEDYOGI.second_moment)(&p, 10.0, 1.0) - 9.99).abs() < 1e-12);
        assert_eq!((FEDYOGI.second_moment)(&p, 4.0, 2.0), 4.0);
        let mut s = fedyogi(&Params::default()).unwrap();
        let next = s.apply(&model(&[0.0]), mean(&[1.0])).unwrap();
        // m = 0.1, v = 0.01: 0.01 · 0.1 / (0.1 + 0.001).
        let want = 0.01 * 0.1 / (0.1 + 1e-3);
        assert!((f64::from(next.tensors()[0].to_f32()[0]) - want).abs() < 1e-9);
    }

    #[test]
    fn restart_continues_bit_identically() {
        restart_is_bit_identical(|| Box::new(fedyogi(&Params::default()).unwrap()));
    }
}
