//! Server-optimiser state (moments, momentum) checkpointed with the model.
//!
//! Vectors are kept as f32 both in memory and on disk, so a server restarted from its
//! checkpoint holds exactly what the running one held and continues bit for bit; the
//! arithmetic of each step is f64.

use std::collections::BTreeMap;

use fedtune_proto::{Bundle, DType, Tensor};

use super::StrategyError;

/// Name of the rounds-applied counter in the state bundle.
const ROUNDS: &str = "rounds";

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OptState {
    /// Rounds applied so far (Flower's `server_round` of the next one is this + 1).
    pub rounds: u64,
    /// `slot.tensor` → values (e.g. `m.layer.weight`).
    vectors: BTreeMap<String, Vec<f32>>,
}

impl OptState {
    /// Empty state for round `rounds` (filled by [`OptState::set`]).
    pub fn at(rounds: u64) -> Self {
        OptState {
            rounds,
            vectors: BTreeMap::new(),
        }
    }

    /// The `slot` vector of `tensor` (`None` before the first round); refuses one of another
    /// length (state from another model).
    pub fn get(
        &self,
        slot: &str,
        tensor: &str,
        len: usize,
    ) -> Result<Option<&[f32]>, StrategyError> {
        match self.vectors.get(&format!("{slot}.{tensor}")) {
            None if self.rounds == 0 => Ok(None),
            None => Err(StrategyError::Mismatch(format!(
                "optimiser state has no `{slot}` for tensor `{tensor}`"
            ))),
            Some(v) if v.len() != len => Err(StrategyError::Mismatch(format!(
                "optimiser state `{slot}.{tensor}` has {} values, the model {len}",
                v.len()
            ))),
            Some(v) => Ok(Some(v)),
        }
    }

    pub fn set(&mut self, slot: &str, tensor: &str, values: Vec<f32>) {
        self.vectors.insert(format!("{slot}.{tensor}"), values);
    }

    /// The state as tensors (`None` before the first round).
    pub fn to_bundle(&self) -> Option<Bundle> {
        if self.rounds == 0 {
            return None;
        }
        let rounds = u32::try_from(self.rounds).unwrap_or(u32::MAX);
        let mut tensors = vec![Tensor::from_u32_vec(ROUNDS, vec![1], vec![rounds]).ok()?];
        for (name, v) in &self.vectors {
            tensors.push(Tensor::from_f32_vec(name.as_str(), vec![v.len()], v.clone()).ok()?);
        }
        Bundle::new(tensors).ok()
    }

    /// Reads what [`OptState::to_bundle`] wrote.
    pub fn from_bundle(state: Bundle) -> Result<Self, StrategyError> {
        let mut out = OptState::default();
        for t in state.into_tensors() {
            if t.name() == ROUNDS {
                out.rounds = match t.to_u32().as_deref() {
                    Some([r]) => u64::from(*r),
                    _ => {
                        return Err(StrategyError::Mismatch(
                            "optimiser state's round counter is not one u32".into(),
                        ));
                    }
                };
            } else if t.dtype() == DType::F32 && t.name().contains('.') {
                out.vectors
                    .insert(t.name().to_string(), t.to_f32().into_owned());
            } else {
                return Err(StrategyError::Mismatch(format!(
                    "unexpected tensor `{}` in optimiser state",
                    t.name()
                )));
            }
        }
        if out.rounds == 0 {
            return Err(StrategyError::Mismatch(
                "optimiser state has no round counter".into(),
            ));
        }
        Ok(out)
    }
}

/// The next model from per-tensor f32 values shaped like `global`'s tensors, each rounded
/// to its tensor's dtype; refuses a non-finite result.
pub(crate) fn model_like(global: &Bundle, next: Vec<Vec<f32>>) -> Result<Bundle, StrategyError> {
    let tensors = global
        .tensors()
        .iter()
        .zip(next)
        .map(|(g, v)| {
            if v.iter().fold(false, |bad, x| bad | !x.is_finite()) {
                return Err(StrategyError::NonFinite(g.name().to_string()));
            }
            super::fedavg::tensor_like(g, v)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bundle::new(tensors)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_foreign_state() {
        let mut s = OptState {
            rounds: 3,
            ..Default::default()
        };
        s.set("m", "w", vec![1.0, -2.5]);
        s.set("v", "w", vec![0.25, 4.0]);
        let back = OptState::from_bundle(s.to_bundle().unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.get("m", "w", 2).unwrap(), Some(&[1.0, -2.5][..]));
        assert!(back.get("m", "w", 3).is_err());
        assert!(back.get("m", "other", 2).is_err());
        assert_eq!(OptState::default().get("m", "w", 2).unwrap(), None);
        assert_eq!(OptState::default().to_bundle(), None);
        let stray = Bundle::new(vec![Tensor::from_f32("x", vec![1], &[1.0]).unwrap()]).unwrap();
        assert!(OptState::from_bundle(stray).is_err());
    }
}
