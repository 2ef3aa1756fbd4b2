//! A small but real learner: linear regression by minibatch SGD on synthetic, non-IID
//! per-client data. It stands in for the LLM trainer so federations can be tested for
//! convergence end to end.

use fedtune_proto::{Bundle, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{LocalUpdate, TaskContext, Trainer, TrainerError};
use fedtune_llm::backprop::TrainError;

const WEIGHT: &str = "linear.weight";
const BIAS: &str = "linear.bias";

/// The initial (all-zero) model for `dim` features.
pub fn linreg_model(dim: usize) -> Bundle {
    let tensors = vec![
        Tensor::from_f32(WEIGHT, vec![dim], &vec![0.0; dim]).expect("shape matches"),
        Tensor::from_f32(BIAS, vec![1], &[0.0]).expect("shape matches"),
    ];
    Bundle::new(tensors).expect("distinct names")
}

/// One client's examples: y = w*·x + b* + noise, with the features' mean shifted per client
/// (feature skew) while the true w*, b* are shared by the federation.
#[derive(Clone, Debug)]
pub struct LinRegData {
    pub x: Vec<Vec<f32>>,
    pub y: Vec<f32>,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl LinRegData {
    /// Client `client`'s data in a federation seeded with `seed`.
    pub fn synthetic(seed: u64, client: u64, examples: usize, dim: usize) -> Self {
        let mut truth = ChaCha8Rng::seed_from_u64(seed);
        let w: Vec<f64> = (0..dim).map(|_| normal(&mut truth)).collect();
        let b = normal(&mut truth);
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (client + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let shift: Vec<f64> = (0..dim).map(|_| normal(&mut rng)).collect();
        let mut x = Vec::with_capacity(examples);
        let mut y = Vec::with_capacity(examples);
        for _ in 0..examples {
            let row: Vec<f64> = shift.iter().map(|s| s + normal(&mut rng)).collect();
            let target =
                row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b + 0.1 * normal(&mut rng);
            x.push(row.iter().map(|&v| v as f32).collect());
            y.push(target as f32);
        }
        LinRegData { x, y }
    }

    pub fn dim(&self) -> usize {
        self.x.first().map_or(0, Vec::len)
    }

    /// Mean squared error of a model on these examples.
    pub fn mse(&self, model: &Bundle) -> Result<f64, TrainerError> {
        let (w, b) = params(model, self.dim())?;
        let sum: f64 = self
            .x
            .iter()
            .zip(&self.y)
            .map(|(x, &y)| (predict(&w, b, x) - f64::from(y)).powi(2))
            .sum();
        Ok(sum / self.y.len().max(1) as f64)
    }
}

fn params(model: &Bundle, dim: usize) -> Result<(Vec<f64>, f64), TrainerError> {
    let get = |name: &str, len: usize| -> Result<Vec<f64>, TrainerError> {
        let t = model
            .get(name)
            .ok_or_else(|| TrainerError::Model(format!("missing tensor `{name}`")))?;
        if t.shape() != [len] {
            return Err(TrainerError::Model(format!(
                "`{name}` has shape {:?}, expected [{len}]",
                t.shape()
            )));
        }
        Ok(t.to_f32().iter().map(|&v| f64::from(v)).collect())
    };
    Ok((get(WEIGHT, dim)?, get(BIAS, 1)?[0]))
}

fn predict(w: &[f64], b: f64, x: &[f32]) -> f64 {
    w.iter().zip(x).map(|(w, &x)| w * f64::from(x)).sum::<f64>() + b
}

/// Trains [`linreg_model`] on one client's [`LinRegData`].
#[derive(Clone, Debug)]
pub struct LinRegTrainer {
    data: LinRegData,
    seed: u64,
}

impl LinRegTrainer {
    pub fn new(data: LinRegData, seed: u64) -> Self {
        LinRegTrainer { data, seed }
    }
}

impl Trainer for LinRegTrainer {
    fn train(&mut self, global: &Bundle, task: &TaskContext) -> Result<LocalUpdate, TrainerError> {
        let dim = self.data.dim();
        let (mut w, mut b) = params(global, dim)?;
        let n = self.data.y.len();
        if n == 0 {
            return Err(TrainerError::NoData("no local examples"));
        }
        let loss_before = self.data.mse(global)?;
        let lr = f64::from(task.plan.learning_rate);
        let batch = (task.plan.batch_size as usize).clamp(1, n);
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ task.round.wrapping_mul(0xA24B_AED4_963E_E407));
        for step in 0..task.plan.local_steps.max(1) as usize {
            let mut gw = vec![0.0; dim];
            let mut gb = 0.0;
            for _ in 0..batch {
                let i = rng.random_range(0..n);
                let err = predict(&w, b, &self.data.x[i]) - f64::from(self.data.y[i]);
                gw.iter_mut()
                    .zip(&self.data.x[i])
                    .for_each(|(g, &x)| *g += 2.0 * err * f64::from(x));
                gb += 2.0 * err;
            }
            w.iter_mut()
                .zip(&gw)
                .for_each(|(w, g)| *w -= lr * g / batch as f64);
            b -= lr * gb / batch as f64;
            if !(b.is_finite() && w.iter().all(|v| v.is_finite())) {
                return Err(TrainError::NonFinite {
                    step: step as u64,
                    what: "the weights".into(),
                }
                .into());
            }
        }
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let model = Bundle::new(vec![
            Tensor::from_f32(WEIGHT, vec![dim], &w32)
                .map_err(|e| TrainerError::Model(e.to_string()))?,
            Tensor::from_f32(BIAS, vec![1], &[b as f32])
                .map_err(|e| TrainerError::Model(e.to_string()))?,
        ])
        .map_err(|e| TrainerError::Model(e.to_string()))?;
        let loss_after = self.data.mse(&model)?;
        Ok(LocalUpdate {
            model,
            num_examples: n as u64,
            metrics: vec![
                ("train_loss_before".into(), loss_before),
                ("train_loss_after".into(), loss_after),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_proto::TrainingPlan;

    #[test]
    fn local_sgd_lowers_the_loss_deterministically() {
        let data = LinRegData::synthetic(3, 0, 64, 4);
        let mut t = LinRegTrainer::new(data.clone(), 9);
        let task = TaskContext {
            round: 1,
            model_version: 0,
            plan: TrainingPlan {
                local_steps: 50,
                batch_size: 8,
                learning_rate: 0.02,
                ..TrainingPlan::default()
            },
        };
        let g = linreg_model(4);
        let a = t.train(&g, &task).unwrap();
        let b = t.train(&g, &task).unwrap();
        assert_eq!(a.model, b.model, "same inputs, same model");
        assert!(data.mse(&a.model).unwrap() < 0.5 * data.mse(&g).unwrap());
        assert_eq!(a.num_examples, 64);
    }

    #[test]
    fn rejects_a_model_of_the_wrong_shape() {
        let mut t = LinRegTrainer::new(LinRegData::synthetic(3, 0, 8, 4), 1);
        let task = TaskContext {
            round: 1,
            model_version: 0,
            plan: TrainingPlan::default(),
        };
        assert!(matches!(
            t.train(&linreg_model(5), &task),
            Err(TrainerError::Model(_))
        ));
    }
}
