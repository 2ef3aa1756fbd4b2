//! Streaming weighted sum: the O(model)-memory aggregator behind FedAvg-style rules.

use fedtune_proto::simd::vectorized;
use fedtune_proto::{Bundle, TensorSpec};
use rayon::prelude::*;

use super::{Aggregate, Aggregator, StrategyError};

/// Running Σ wᵢ·Δᵢ in f64 per element, plus Σ wᵢ. Each update is folded as it arrives and
/// then dropped, so memory is one f64 copy of the model whatever the number of clients.
#[derive(Debug)]
pub struct WeightedSum {
    specs: Vec<TensorSpec>,
    sums: Vec<Vec<f64>>,
    total_weight: f64,
    count: usize,
    parallel: bool,
}

impl WeightedSum {
    pub fn new(global: &Bundle) -> Self {
        WeightedSum {
            specs: global.manifest(),
            sums: global.tensors().iter().map(|t| zeros(t.numel())).collect(),
            total_weight: 0.0,
            count: 0,
            parallel: false,
        }
    }
}

impl Aggregator for WeightedSum {
    fn fold(&mut self, update: &Bundle, weight: f64) -> Result<(), StrategyError> {
        super::check_update(&self.specs, update, weight)?;
        for (sum, tensor) in self.sums.iter_mut().zip(update.tensors()) {
            fold_into(sum, &tensor.to_f32(), weight, self.parallel);
        }
        self.total_weight += weight;
        self.count += 1;
        Ok(())
    }

    fn count(&self) -> usize {
        self.count
    }

    fn set_parallel(&mut self, parallel: bool) {
        self.parallel = parallel;
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
                vectorized(
                    #[inline(always)]
                    || divide(&mut s, w),
                );
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

/// Elements per piece when a fold is split across cores: large enough that splitting costs
/// nothing next to the memory traffic, small enough to share a 1M-value tensor.
const PIECE: usize = 1 << 16;

/// `sum[i] += weight · values[i]`, with `parallel` split by element ranges across the rayon
/// pool: each sum is the same expression whatever the split, so results do not depend on
/// the thread count.
fn fold_into(sum: &mut [f64], values: &[f32], weight: f64, parallel: bool) {
    let add = move |(s, v): (&mut [f64], &[f32])| {
        vectorized(
            #[inline(always)]
            move || add_scaled(s, v, weight),
        )
    };
    if !parallel || sum.len() < 2 * PIECE {
        add((sum, values));
    } else {
        sum.par_chunks_mut(PIECE)
            .zip(values.par_chunks(PIECE))
            .for_each(add);
    }
}

/// `sum[i] += weight · values[i]` (a function of its own, so the loop sees two slices that
/// do not alias and vectorizes).
#[inline(always)]
fn add_scaled(sum: &mut [f64], values: &[f32], weight: f64) {
    for (s, &v) in sum.iter_mut().zip(values) {
        *s += weight * f64::from(v);
    }
}

/// `sum[i] /= w`.
#[inline(always)]
fn divide(sum: &mut [f64], w: f64) {
    sum.iter_mut().for_each(|x| *x /= w);
}

/// `n` zeros, written rather than left to the kernel: `vec![0.0; n]` gets fresh zero-page
/// mappings whose first `+=` faults twice (read, then copy-on-write with a TLB flush on every
/// core, costly in VMs); writing them first takes one plain fault per page.
fn zeros(n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0.0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_proto::Tensor;

    /// Folding on every core or on one thread gives the same sums, bit for bit.
    #[test]
    fn parallel_and_serial_folds_agree() {
        let n = 5 * PIECE + 7;
        let bundle = |k: usize| {
            let v: Vec<f32> = (0..n).map(|i| ((i * 31 + k) as f32).sin() * 1e-3).collect();
            Bundle::new(vec![Tensor::from_f32("w", vec![n], &v).unwrap()]).unwrap()
        };
        let global = bundle(0);
        let sums = |parallel: bool| {
            let mut agg = Box::new(WeightedSum::new(&global));
            agg.set_parallel(parallel);
            for k in 1..6 {
                agg.fold(&bundle(k), k as f64 + 0.5).unwrap();
            }
            agg.finish().unwrap().mean
        };
        let (serial, parallel) = (sums(false), sums(true));
        assert!(serial[0].iter().any(|&x| x != 0.0));
        assert_eq!(serial, parallel);
    }
}
