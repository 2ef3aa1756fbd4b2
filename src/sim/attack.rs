//! Poisoned updates from simulated Byzantine devices, to test robust aggregation
//! (`--byzantine-rate R --attack sign-flip|gaussian|scale`).
//!
//! A Byzantine device trains honestly, then sends global + f(Δ) instead of global + Δ,
//! where Δ is its honest update and S the attack scale:
//! sign-flip sends −S·Δ, scale sends S·Δ, gaussian sends noise N(0, (S·rms(Δ))²) per value.
//! It reports its true example count.

use fedtune_client::{LocalUpdate, TrainerError};
use fedtune_proto::{Bundle, Tensor};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// How a Byzantine device poisons its update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// −S·Δ: pulls the model the other way.
    SignFlip,
    /// Gaussian noise of S times the update's RMS.
    Gaussian,
    /// S·Δ: an update S times too large.
    Scale,
}

/// The attack one device makes.
#[derive(Clone, Copy, Debug)]
pub struct Poison {
    pub attack: Attack,
    pub scale: f64,
    /// Seeds the Gaussian attack (with the round).
    pub seed: u64,
}

impl Poison {
    /// `honest` (the device's trained parameters) replaced by the poisoned parameters.
    pub fn apply(
        &self,
        global: &Bundle,
        mut honest: LocalUpdate,
        round: u64,
    ) -> Result<LocalUpdate, TrainerError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ round.wrapping_mul(0x9E37_79B9));
        let bad = |e: fedtune_proto::CodecError| TrainerError::Model(e.to_string());
        let tensors = global
            .tensors()
            .iter()
            .zip(honest.model.tensors())
            .map(|(g, l)| {
                let (g32, l32) = (g.to_f32(), l.to_f32());
                let delta: Vec<f64> = l32
                    .iter()
                    .zip(g32.iter())
                    .map(|(&l, &g)| f64::from(l) - f64::from(g))
                    .collect();
                let rms =
                    (delta.iter().map(|d| d * d).sum::<f64>() / delta.len().max(1) as f64).sqrt();
                let values: Vec<f32> = g32
                    .iter()
                    .zip(&delta)
                    .map(|(&g, &d)| {
                        let poisoned = match self.attack {
                            Attack::SignFlip => -self.scale * d,
                            Attack::Scale => self.scale * d,
                            Attack::Gaussian => {
                                self.scale * rms * rng.sample::<f64, _>(StandardNormal)
                            }
                        };
                        (f64::from(g) + poisoned) as f32
                    })
                    .collect();
                Tensor::from_f32_as(l.name(), l.shape().to_vec(), &values, l.dtype()).map_err(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        honest.model = Bundle::new(tensors).map_err(bad)?;
        Ok(honest)
    }
}

/// Which of `n` devices are Byzantine: ⌊rate·n⌋ of them, drawn with `seed`.
pub fn byzantine_devices(n: usize, rate: f64, seed: u64) -> Vec<bool> {
    let count = ((rate * n as f64).floor() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xB12A_471E));
    let mut out = vec![false; n];
    for &i in &order[..count] {
        out[i] = true;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn update(v: &[f32]) -> LocalUpdate {
        LocalUpdate {
            model: Bundle::new(vec![Tensor::from_f32("w", vec![v.len()], v).unwrap()]).unwrap(),
            num_examples: 7,
            metrics: Vec::new(),
        }
    }

    #[test]
    fn attacks_transform_the_update_as_documented() {
        let global = update(&[1.0, 1.0, 1.0, 1.0]).model;
        let honest = update(&[1.5, 0.5, 1.0, 2.0]);
        let run = |attack, scale| {
            let p = Poison {
                attack,
                scale,
                seed: 3,
            };
            let out = p.apply(&global, honest.clone(), 2).unwrap();
            assert_eq!(out.num_examples, 7);
            out.model.tensors()[0].to_f32().into_owned()
        };
        assert_eq!(run(Attack::SignFlip, 10.0), vec![-4.0, 6.0, 1.0, -9.0]);
        assert_eq!(run(Attack::Scale, 2.0), vec![2.0, 0.0, 1.0, 3.0]);
        let noise = run(Attack::Gaussian, 1.0);
        assert_ne!(noise, honest.model.tensors()[0].to_f32().into_owned());
        assert_eq!(noise, run(Attack::Gaussian, 1.0), "seeded");
    }

    #[test]
    fn picks_the_floor_of_rate_times_n_devices() {
        let b = byzantine_devices(95, 0.1, 1);
        assert_eq!(b.iter().filter(|&&x| x).count(), 9);
        assert_eq!(b, byzantine_devices(95, 0.1, 1));
        assert_ne!(b, byzantine_devices(95, 0.1, 2));
        assert!(!byzantine_devices(10, 0.0, 1).contains(&true));
    }
}
