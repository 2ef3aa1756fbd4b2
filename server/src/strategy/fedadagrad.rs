//! FedAdagrad (Reddi et al., 2021): v ← v + Δ², step η, and β₁ = 0 (m is the round's Δ),
//! as in Flower, whose defaults are eta 0.1, eta_l 0.1, tau 1e-9.

use super::StrategyError;
use super::fedopt::{FedOpt, FedOptParams, Rule};
use super::params::Params;

pub const FEDADAGRAD: Rule = Rule {
    name: "fedadagrad",
    defaults: FedOptParams {
        eta: 1e-1,
        eta_l: 1e-1,
        beta_1: 0.0,
        beta_2: 0.0,
        tau: 1e-9,
    },
    betas: false,
    second_moment: |_, v, d| v + d * d,
    step_size: |p, _| p.eta,
};

pub fn fedadagrad(params: &Params) -> Result<FedOpt, StrategyError> {
    FedOpt::new(FEDADAGRAD, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Strategy;
    use crate::strategy::fedopt::tests::{mean, model, restart_is_bit_identical};

    #[test]
    fn steps_shrink_as_squares_accumulate() {
        let mut s = fedadagrad(&Params::default()).unwrap();
        let x1 = s.apply(&model(&[0.0]), mean(&[2.0])).unwrap();
        let x2 = s.apply(&x1, mean(&[2.0])).unwrap();
        let (a, b) = (x1.tensors()[0].to_f32()[0], x2.tensors()[0].to_f32()[0]);
        // Round 1: 0.1·2/2 = 0.1; round 2: + 0.1·2/√8.
        assert!((a - 0.1).abs() < 1e-7 && (b - a - 0.2 / 8f32.sqrt()).abs() < 1e-7);
        assert!(fedadagrad(&Params::parse(&["beta_1=0.5"]).unwrap()).is_err());
    }

    #[test]
    fn restart_continues_bit_identically() {
        restart_is_bit_identical(|| Box::new(fedadagrad(&Params::default()).unwrap()));
    }
}
