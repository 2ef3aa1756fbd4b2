//! The FedOpt family (Reddi et al., 2021) as Flower 1.42 writes it: the round's mean update
//! Δ is a pseudo-gradient for a server-side adaptive optimiser,
//!
//! m ← β₁·m + (1 − β₁)·Δ;  v ← rule(v, Δ);  x ← x + η_t · m / (√v + τ)
//!
//! with the second-moment rule and step size η_t given by FedAdagrad, FedAdam or FedYogi
//! (each in its own file). Under differential privacy Δ is the noised mean.

use fedtune_proto::Bundle;

use super::opt_state::{OptState, model_like};
use super::params::Params;
use super::staged::describe;
use super::{Aggregate, Strategy, StrategyError};

/// Flower's FedOpt constructor parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FedOptParams {
    /// Server learning rate.
    pub eta: f64,
    /// Flower's client-side learning rate: accepted and recorded for compatibility, unused
    /// by aggregation (as in Flower); devices train with the job's `lr`.
    pub eta_l: f64,
    pub beta_1: f64,
    pub beta_2: f64,
    /// Adaptivity: keeps the step finite where v is 0.
    pub tau: f64,
}

/// One of the family: its name, which parameters it takes and its update rules.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub defaults: FedOptParams,
    /// Whether `beta_1` and `beta_2` are settable (FedAdagrad fixes them at 0).
    pub betas: bool,
    /// The new second moment from the old one and the update element.
    pub second_moment: fn(&FedOptParams, f64, f64) -> f64,
    /// The step size of round `t` (Flower's `server_round`, from 1).
    pub step_size: fn(&FedOptParams, u64) -> f64,
}

/// A FedOpt strategy.
#[derive(Debug, Clone)]
pub struct FedOpt {
    rule: Rule,
    params: FedOptParams,
    state: OptState,
}

impl FedOpt {
    pub fn new(rule: Rule, params: &Params) -> Result<Self, StrategyError> {
        let d = rule.defaults;
        let mut r = params.reader();
        let positive = |v: f64| v > 0.0;
        let unit = |v: f64| (0.0..1.0).contains(&v);
        let mut p = FedOptParams {
            eta: r.f64("eta", d.eta, positive, "> 0")?,
            eta_l: r.f64("eta_l", d.eta_l, positive, "> 0")?,
            beta_1: d.beta_1,
            beta_2: d.beta_2,
            tau: r.f64("tau", d.tau, positive, "> 0")?,
        };
        if rule.betas {
            p.beta_1 = r.f64("beta_1", d.beta_1, unit, "0 ≤ beta_1 < 1")?;
            p.beta_2 = r.f64("beta_2", d.beta_2, unit, "0 ≤ beta_2 < 1")?;
        }
        r.finish(rule.name)?;
        Ok(FedOpt {
            rule,
            params: p,
            state: OptState::default(),
        })
    }
}

impl Strategy for FedOpt {
    fn name(&self) -> &'static str {
        self.rule.name
    }

    fn describe(&self) -> String {
        let p = &self.params;
        let mut s = vec![("eta", p.eta.to_string()), ("eta_l", p.eta_l.to_string())];
        if self.rule.betas {
            s.push(("beta_1", p.beta_1.to_string()));
            s.push(("beta_2", p.beta_2.to_string()));
        }
        s.push(("tau", p.tau.to_string()));
        describe(self.rule.name, &s)
    }

    fn apply(&mut self, global: &Bundle, aggregate: Aggregate) -> Result<Bundle, StrategyError> {
        let p = self.params;
        let t = self.state.rounds + 1;
        let eta = (self.rule.step_size)(&p, t);
        let mut next_state = OptState::at(t);
        let mut next = Vec::with_capacity(global.tensors().len());
        for (g, delta) in global.tensors().iter().zip(&aggregate.mean) {
            let n = g.numel();
            let m0 = self.state.get("m", g.name(), n)?;
            let v0 = self.state.get("v", g.name(), n)?;
            let x = g.to_f32();
            let (mut m, mut v, mut out) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for j in 0..n {
                let d = delta[j];
                let mp = m0.map_or(0.0, |m| f64::from(m[j]));
                let vp = v0.map_or(0.0, |v| f64::from(v[j]));
                let mj = p.beta_1 * mp + (1.0 - p.beta_1) * d;
                let vj = (self.rule.second_moment)(&p, vp, d);
                out.push((f64::from(x[j]) + eta * mj / (vj.sqrt() + p.tau)) as f32);
                m.push(mj as f32);
                v.push(vj as f32);
            }
            next_state.set("m", g.name(), m);
            next_state.set("v", g.name(), v);
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
pub(crate) mod tests {
    use super::*;
    use fedtune_proto::Tensor;

    pub(crate) fn model(v: &[f32]) -> Bundle {
        Bundle::new(vec![Tensor::from_f32("w", vec![v.len()], v).unwrap()]).unwrap()
    }

    pub(crate) fn mean(v: &[f64]) -> Aggregate {
        Aggregate {
            mean: vec![v.to_vec()],
            total_weight: 1.0,
            count: 1,
        }
    }

    /// Three rounds straight through equal three rounds each run by a fresh strategy that
    /// restores what the previous one saved, bit for bit; forgetting the state changes the
    /// result (so the state matters and the comparison can fail).
    pub(crate) fn restart_is_bit_identical(make: impl Fn() -> Box<dyn Strategy>) {
        let deltas = [[0.5, -0.25, 0.0], [0.1, 0.2, -0.3], [-0.4, 0.0, 0.7]];
        let start = model(&[1.0, 2.0, 3.0]);
        let mut straight = make();
        let mut x = start.clone();
        for d in &deltas {
            x = straight.apply(&x, mean(d)).unwrap();
        }
        let (mut y, mut z) = (start.clone(), start.clone());
        let mut saved: Option<Bundle> = None;
        for d in &deltas {
            let mut restarted = make();
            if let Some(s) = saved.take() {
                restarted.restore(s).unwrap();
            }
            y = restarted.apply(&y, mean(d)).unwrap();
            saved = restarted.state();
            z = make().apply(&z, mean(d)).unwrap();
        }
        assert_eq!(x, y);
        assert_ne!(x, z, "the state made no difference");
    }
}
