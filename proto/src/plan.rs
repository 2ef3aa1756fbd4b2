//! The local training a round asks of its devices, as a domain type. The wire carries it as
//! `v1::TrainingConfig` (three fields and a map of strings, so older and newer peers share
//! one message); [`TrainingPlan::from_wire`] converts it once, with validation, on the device,
//! and [`TrainingPlan::to_wire`] writes it on the server.

use std::collections::HashMap;

use crate::v1;

/// The optimiser a device runs its local steps with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LocalOptimizer {
    AdamW {
        weight_decay: f32,
    },
    /// SGD with momentum (0: plain SGD).
    Sgd {
        momentum: f32,
    },
}

/// What a device does with the round's model before sending its update back.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingPlan {
    pub local_steps: u32,
    pub batch_size: u32,
    pub learning_rate: f32,
    pub optimizer: LocalOptimizer,
    /// Global-norm gradient clipping (`None`: off).
    pub max_grad_norm: Option<f64>,
    /// Micro-batches accumulated per step (at least 1).
    pub grad_accum: u32,
    /// FedProx's proximal weight μ (0: plain local training).
    pub prox_mu: f32,
}

impl Default for TrainingPlan {
    fn default() -> Self {
        TrainingPlan {
            local_steps: 10,
            batch_size: 16,
            learning_rate: 0.01,
            optimizer: LocalOptimizer::AdamW { weight_decay: 0.0 },
            max_grad_norm: Some(1.0),
            grad_accum: 1,
            prox_mu: 0.0,
        }
    }
}

/// A training plan from the wire that a device cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("training plan: {key} = {value:?} is not valid ({why})")]
    Value {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error(
        "training plan: unknown setting {0:?} (known: optimizer, weight_decay, momentum, \
         max_grad_norm, grad_accum, prox_mu)"
    )]
    UnknownKey(String),
}

const KNOWN: [&str; 6] = [
    "optimizer",
    "weight_decay",
    "momentum",
    "max_grad_norm",
    "grad_accum",
    "prox_mu",
];

impl TrainingPlan {
    /// Reads and checks a plan: every setting named, every number finite and in range. The
    /// three fixed fields are taken as they are (0 steps or batch: the trainer's minimum of 1).
    pub fn from_wire(c: &v1::TrainingConfig) -> Result<Self, PlanError> {
        if let Some(k) = c.extra.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(PlanError::UnknownKey(k.clone()));
        }
        if !(c.learning_rate.is_finite() && c.learning_rate >= 0.0) {
            return Err(bad(
                "learning_rate",
                &c.learning_rate.to_string(),
                "a finite rate ≥ 0",
            ));
        }
        let get = |k: &str| c.extra.get(k).map(String::as_str);
        let weight_decay = number(get, "weight_decay", 0.0, |v| v >= 0.0)?;
        let momentum = number(get, "momentum", 0.0, |v| (0.0..1.0).contains(&v))?;
        let optimizer = match get("optimizer").unwrap_or("adamw") {
            "adamw" => LocalOptimizer::AdamW { weight_decay },
            "sgd" => LocalOptimizer::Sgd { momentum },
            other => return Err(bad("optimizer", other, "adamw or sgd")),
        };
        let max_norm: f64 = number(get, "max_grad_norm", 1.0, |v| v >= 0.0)?;
        let grad_accum = match get("grad_accum") {
            None => 1,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad("grad_accum", v, "a whole number ≥ 1"))?,
        };
        Ok(TrainingPlan {
            local_steps: c.local_steps,
            batch_size: c.batch_size,
            learning_rate: c.learning_rate,
            optimizer,
            max_grad_norm: (max_norm > 0.0).then_some(max_norm),
            grad_accum,
            prox_mu: number(get, "prox_mu", 0.0, |v| v >= 0.0)?,
        })
    }

    /// The plan as sent: settings left at their defaults are not written.
    pub fn to_wire(&self) -> v1::TrainingConfig {
        let mut extra = HashMap::new();
        let mut put = |k: &str, v: String| {
            extra.insert(k.to_string(), v);
        };
        match self.optimizer {
            LocalOptimizer::AdamW { weight_decay } if weight_decay != 0.0 => {
                put("weight_decay", weight_decay.to_string());
            }
            LocalOptimizer::AdamW { .. } => {}
            LocalOptimizer::Sgd { momentum } => {
                put("optimizer", "sgd".into());
                put("momentum", momentum.to_string());
            }
        }
        if self.max_grad_norm != Some(1.0) {
            put(
                "max_grad_norm",
                self.max_grad_norm.unwrap_or(0.0).to_string(),
            );
        }
        if self.grad_accum != 1 {
            put("grad_accum", self.grad_accum.to_string());
        }
        if self.prox_mu != 0.0 {
            put("prox_mu", self.prox_mu.to_string());
        }
        v1::TrainingConfig {
            local_steps: self.local_steps,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            extra,
        }
    }
}

fn bad(key: &str, value: &str, why: &'static str) -> PlanError {
    PlanError::Value {
        key: key.to_string(),
        value: value.to_string(),
        why,
    }
}

/// Setting `key` as a finite number that `ok` accepts, or `default` when absent.
fn number<'a, T>(
    get: impl Fn(&str) -> Option<&'a str>,
    key: &str,
    default: T,
    ok: impl Fn(T) -> bool,
) -> Result<T, PlanError>
where
    T: std::str::FromStr + Copy + Into<f64>,
{
    let Some(v) = get(key) else {
        return Ok(default);
    };
    v.parse::<T>()
        .ok()
        .filter(|&x| x.into().is_finite() && ok(x))
        .ok_or_else(|| bad(key, v, "a finite number in range"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wire(pairs: &[(&str, &str)]) -> v1::TrainingConfig {
        v1::TrainingConfig {
            local_steps: 5,
            batch_size: 4,
            learning_rate: 0.002,
            extra: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn plans_round_trip_through_the_wire() {
        let plans = [
            TrainingPlan::default(),
            TrainingPlan {
                optimizer: LocalOptimizer::Sgd { momentum: 0.9 },
                max_grad_norm: None,
                grad_accum: 3,
                prox_mu: 0.01,
                ..TrainingPlan::default()
            },
            TrainingPlan {
                optimizer: LocalOptimizer::AdamW { weight_decay: 0.1 },
                max_grad_norm: Some(0.5),
                ..TrainingPlan::default()
            },
        ];
        for p in plans {
            assert_eq!(TrainingPlan::from_wire(&p.to_wire()).unwrap(), p);
        }
        // Defaults are not written: the plain plan sends an empty map.
        assert!(TrainingPlan::default().to_wire().extra.is_empty());
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let err = |pairs: &[(&str, &str)]| TrainingPlan::from_wire(&wire(pairs)).unwrap_err();
        assert_eq!(err(&[("rank", "8")]), PlanError::UnknownKey("rank".into()));
        for (k, v) in [
            ("optimizer", "lion"),
            ("prox_mu", "-1"),
            ("prox_mu", "NaN"),
            ("max_grad_norm", "inf"),
            ("grad_accum", "0"),
            ("grad_accum", "2.5"),
            ("momentum", "1"),
            ("weight_decay", "x"),
        ] {
            let e = err(&[("optimizer", "sgd"), (k, v)]);
            assert!(
                matches!(&e, PlanError::Value { key, .. } if key == k),
                "{k}={v}: {e}"
            );
        }
        let mut nan_lr = wire(&[]);
        nan_lr.learning_rate = f32::NAN;
        assert!(TrainingPlan::from_wire(&nan_lr).is_err());
    }
}
