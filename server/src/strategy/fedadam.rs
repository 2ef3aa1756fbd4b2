//! FedAdam (Reddi et al., 2021): Adam on the server, v ← β₂·v + (1 − β₂)·Δ², with Flower's
//! bias-corrected step η·√(1 − β₂^(t+1)) / (1 − β₁^(t+1)) at round t. Flower's defaults:
//! eta 0.1, eta_l 0.1, beta_1 0.9, beta_2 0.99, tau 1e-9.

use super::StrategyError;
use super::fedopt::{FedOpt, FedOptParams, Rule};
use super::params::Params;

pub const FEDADAM: Rule = Rule {
    name: "fedadam",
    defaults: FedOptParams {
        eta: 1e-1,
        eta_l: 1e-1,
        beta_1: 0.9,
        beta_2: 0.99,
        tau: 1e-9,
    },
    betas: true,
    second_moment: |p, v, d| p.beta_2 * v + (1.0 - p.beta_2) * (d * d),
    step_size: |p, t| {
        let t = t as f64 + 1.0;
        p.eta * (1.0 - p.beta_2.powf(t)).sqrt() / (1.0 - p.beta_1.powf(t))
    },
};

pub fn fedadam(params: &Params) -> Result<FedOpt, StrategyError> {
    FedOpt::new(FEDADAM, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Strategy;
    use crate::strategy::fedopt::tests::{mean, model, restart_is_bit_identical};

    #[test]
    fn first_round_moves_each_weight_by_the_bias_corrected_step() {
        let mut s = fedadam(&Params::default()).unwrap();
        let next = s.apply(&model(&[1.0, 1.0]), mean(&[0.3, -2.0])).unwrap();
        // m = 0.1Δ, √v = 0.1|Δ|: each weight moves by η_1 = 0.1·√(1−0.99²)/(1−0.9²) in Δ's sign.
        let step = 0.1 * (1.0f64 - 0.99f64.powi(2)).sqrt() / (1.0 - 0.9f64.powi(2));
        let got = next.tensors()[0].to_f32();
        assert!((f64::from(got[0]) - (1.0 + step)).abs() < 1e-6, "{got:?}");
        assert!((f64::from(got[1]) - (1.0 - step)).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn restart_continues_bit_identically() {
        restart_is_bit_identical(|| Box::new(fedadam(&Params::default()).unwrap()));
    }
}
