//! FedAvgM (Hsu et al., 2019): server SGD with momentum on the pseudo-gradient −Δ, as
//! Flower writes it: g = −Δ; after round 1, m ← μ·m + g (m = g in round 1); x ← x − η·m.
//! Flower's defaults (`server_learning_rate` 1, `server_momentum` 0) make it FedAvg.

use fedtune_proto::Bundle;

use super::opt_state::{OptState, model_like};
use super::params::Params;
use super::staged::describe;
use super::{Aggregate, FedAvg, Strategy, StrategyError};

#[derive(Debug, Clone)]
pub struct FedAvgM {
    pub server_learning_rate: f64,
    pub server_momentum: f64,
    state: OptState,
}

impl FedAvgM {
    pub fn from_params(params: &Params) -> Result<Self, StrategyError> {
        let mut r = params.reader();
        let s = FedAvgM {
            server_learning_rate: r.f64("server_learning_rate", 1.0, |v| v > 0.0, "> 0")?,
            server_momentum: r.f64(
                "server_momentum",
                0.0,
                |v| (0.0..1.0).contains(&v),
                "0 ≤ server_momentum < 1",
            )?,
            state: OptState::default(),
        };
        r.finish("fedavgm")?;
        Ok(s)
    }
}

impl Strategy for FedAvgM {
    fn name(&self) -> &'static str {
        "fedavgm"
    }

    fn describe(&self) -> String {
        describe(
            "fedavgm",
            &[
                (
                    "server_learning_rate",
                    self.server_learning_rate.to_string(),
                ),
                ("server_momentum", self.server_momentum.to_string()),
            ],
        )
    }

    fn apply(&mut self, global: &Bundle, aggregate: Aggregate) -> Result<Bundle, StrategyError> {
        // Flower's `server_opt`: without a rate or momentum it is FedAvg.
        if self.server_learning_rate == 1.0 && self.server_momentum == 0.0 {
            return FedAvg.apply(global, aggregate);
        }
        let (lr, mu) = (self.server_learning_rate, self.server_momentum);
        let mut next_state = OptState::at(self.state.rounds + 1);
        let mut next = Vec::with_capacity(global.tensors().len());
        for (g, delta) in global.tensors().iter().zip(&aggregate.mean) {
            let prev = self.state.get("momentum", g.name(), g.numel())?;
            let x = g.to_f32();
            let mut momentum = Vec::with_capacity(if mu > 0.0 { g.numel() } else { 0 });
            let out: Vec<f32> = x
                .iter()
                .zip(delta)
                .enumerate()
                .map(|(j, (&x, &d))| {
                    let mut step = -d;
                    if mu > 0.0 {
                        if let Some(m) = prev {
                            step += mu * f64::from(m[j]);
                        }
                        momentum.push(step as f32);
                    }
                    (f64::from(x) - lr * step) as f32
                })
                .collect();
            if mu > 0.0 {
                next_state.set("momentum", g.name(), momentum);
            }
            next.push(out);
        }
        let model = model_like(global, next)?;
        self.state = next_state;
        Ok(model)
    }

    fn state(&self) -> Option<Bundle> {
        self.state.to_bundle()
    }

    fn restore(&mut self, state: Bundle) -> Result<(), StrategyError> {
        self.state = OptState::from_bundle(state)?;
        Ok(())
    }

    fn reset(&mut self) {
        self.state = OptState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::fedopt::tests::{mean, model, restart_is_bit_identical};

    fn fedavgm(items: &[&str]) -> FedAvgM {
        FedAvgM::from_params(&Params::parse(items).unwrap()).unwrap()
    }

    #[test]
    fn momentum_accumulates_and_defaults_are_fedavg() {
        let mut s = fedavgm(&["server_momentum=0.5", "server_learning_rate=2"]);
        let x1 = s.apply(&model(&[0.0]), mean(&[1.0])).unwrap();
        let x2 = s.apply(&x1, mean(&[1.0])).unwrap();
        // m1 = −1 → x1 = 2; m2 = 0.5·(−1) − 1 = −1.5 → x2 = 2 + 3.
        assert_eq!(x1.tensors()[0].to_f32()[0], 2.0);
        assert_eq!(x2.tensors()[0].to_f32()[0], 5.0);
        let mut plain = fedavgm(&[]);
        let y = plain.apply(&model(&[1.0]), mean(&[0.25])).unwrap();
        assert_eq!(y.tensors()[0].to_f32()[0], 1.25);
        assert!(plain.state().is_none());
    }

    #[test]
    fn restart_continues_bit_identically() {
        restart_is_bit_identical(|| Box::new(fedavgm(&["server_momentum=0.9"])));
    }
}
