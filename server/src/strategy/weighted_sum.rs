//! Streaming weighted sum: the O(model)-memory aggregator behind FedAvg-style rules.

use fedtune_proto::{Bundle, TensorSpec};

use super::{Aggregate, Aggregator, StrategyError};

/// Running Σ wᵢ·Δᵢ in f64 per element, plus Σ wᵢ. Each update is folded as it arrives and
/// then dropped, so memory is one f64 copy of the model whatever the number of clients.
#[derive(Debug)]
pub struct WeightedSum {
    specs: Vec<TensorSpec>,
    sums: Vec<Vec<f64>>,
    total_weight: f64,
    count: usize,
}

impl WeightedSum {
    pub fn new(global: &Bundle) -> Self {
        WeightedSum {
            specs: global.manifest(),
            sums: global
                .tensors()
                .iter()
                .map(|t| vec![0.0; t.numel()])
                .collect(),
            total_weight: 0.0,
            count: 0,
        }
    }
}

impl Aggregator for WeightedSum {
    fn fold(&mut self, update: &Bundle, weight: f64) -> Result<(), StrategyError> {
        if update.manifest() != self.specs {
            return Err(StrategyError::Mismatch(
                "manifest differs from the global model".into(),
            ));
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(StrategyError::Mismatch(format!(
                "weight {weight} must be positive"
            )));
        }
        for (sum, tensor) in self.sums.iter_mut().zip(update.tensors()) {
            let values = tensor.to_f32();
            for (s, &v) in sum.iter_mut().zip(values.iter()) {
                *s += weight * f64::from(v);
            }
        }
        self.total_weight += weight;
        self.count += 1;
        Ok(())
    }

    fn count(&self) -> usize {
        self.count
    }

    fn finish(self: Box<Self>) -> Result<Aggregate, StrategyError> {
        if self.count == 0 {
            return Err(StrategyError::Empty);
        }
        let w = self.total_weight;
        let mean = self
            .sums
            .into_iter()
            .map(|mut s| {
                s.iter_mut().for_each(|x| *x /= w);
                s
            })
            .collect();
        Ok(Aggregate {
            mean,
            total_weight: w,
            count: self.count,
        })
    }
}
