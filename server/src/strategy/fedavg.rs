//! FedAvg (McMahan et al., 2017): the next model is the example-weighted mean of the clients'.

use fedtune_proto::simd::vectorized;
use fedtune_proto::{Bundle, Tensor};

use super::{Aggregate, Strategy, StrategyError};

/// Federated averaging: global + Σ nᵢ·Δᵢ / Σ nᵢ, computed in f64 and rounded once to each
/// tensor's dtype.
#[derive(Debug, Default, Clone, Copy)]
pub struct FedAvg;

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn apply(&mut self, global: &Bundle, aggregate: Aggregate) -> Result<Bundle, StrategyError> {
        let tensors = global
            .tensors()
            .iter()
            .zip(&aggregate.mean)
            .map(|(g, delta)| {
                let global = g.to_f32();
                let (next, bad) = vectorized(
                    #[inline(always)]
                    || add_rounded(&global, delta),
                );
                if bad {
                    return Err(StrategyError::NonFinite(g.name().to_string()));
                }
                tensor_like(g, next)
            })
            .collect::<Result<Vec<_>, StrategyError>>()?;
        Ok(Bundle::new(tensors)?)
    }
}

/// A tensor named and shaped like `g` holding `next`, rounded to `g`'s dtype.
pub(crate) fn tensor_like(g: &Tensor, next: Vec<f32>) -> Result<Tensor, StrategyError> {
    Ok(match g.dtype() {
        fedtune_proto::DType::F32 => Tensor::from_f32_vec(g.name(), g.shape().to_vec(), next)?,
        other => Tensor::from_f32_as(g.name(), g.shape().to_vec(), &next, other)?,
    })
}

/// `global[i] + delta[i]` rounded to f32, and whether any result is not finite (a
/// branch-free scan, so it vectorizes, rather than `any`).
#[inline(always)]
fn add_rounded(global: &[f32], delta: &[f64]) -> (Vec<f32>, bool) {
    let next: Vec<f32> = global
        .iter()
        .zip(delta)
        .map(|(&x, &d)| (f64::from(x) + d) as f32)
        .collect();
    let bad = next.iter().fold(false, |bad, v| bad | !v.is_finite());
    (next, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_of_updates() {
        let global =
            Bundle::new(vec![Tensor::from_f32("w", vec![2], &[1.0, 2.0]).unwrap()]).unwrap();
        let mut agg = FedAvg.aggregator(&global);
        let d1 = Bundle::new(vec![Tensor::from_f32("w", vec![2], &[1.0, 0.0]).unwrap()]).unwrap();
        let d2 = Bundle::new(vec![Tensor::from_f32("w", vec![2], &[-1.0, 3.0]).unwrap()]).unwrap();
        agg.fold(&d1, 3.0).unwrap();
        agg.fold(&d2, 1.0).unwrap();
        let next = FedAvg.apply(&global, agg.finish().unwrap()).unwrap();
        // w0 = 1 + (3·1 + 1·(−1))/4 = 1.5 ; w1 = 2 + (0 + 3)/4 = 2.75
        assert_eq!(next.tensors()[0].to_f32().as_ref(), &[1.5, 2.75]);
    }

    #[test]
    fn refuses_mismatched_update_and_empty_round() {
        let global =
            Bundle::new(vec![Tensor::from_f32("w", vec![2], &[1.0, 2.0]).unwrap()]).unwrap();
        let mut agg = FedAvg.aggregator(&global);
        let bad = Bundle::new(vec![
            Tensor::from_f32("w", vec![3], &[1.0, 0.0, 0.0]).unwrap(),
        ])
        .unwrap();
        assert!(agg.fold(&bad, 1.0).is_err());
        assert!(matches!(agg.finish(), Err(StrategyError::Empty)));
    }

    /// A round computed with the AVX2 loops and one computed with the baseline loops give
    /// the same model, bit for bit (odd length: the vector loops' remainders are used too).
    /// Without AVX2 both would run the baseline loops: the test says so and proves nothing.
    #[test]
    fn avx2_and_baseline_rounds_agree() {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: no AVX2 on this CPU, both rounds would run the baseline loops");
            return;
        }
        let n = 70_001;
        let bundle = |k: usize| {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 7 + k) as f32 * 0.1).sin() * 1e-2)
                .collect();
            Bundle::new(vec![Tensor::from_f32_vec("w", vec![n], v).unwrap()]).unwrap()
        };
        let global = bundle(0);
        let round = |avx2: bool| {
            fedtune_proto::simd::allow_avx2(avx2);
            let mut agg = FedAvg.aggregator(&global);
            for k in 1..5 {
                let update = bundle(k).tensors()[0].map_f32(|x| x * 0.5 - 1e-3);
                agg.fold(&Bundle::new(vec![update]).unwrap(), k as f64 * 3.0)
                    .unwrap();
            }
            let next = FedAvg.apply(&global, agg.finish().unwrap()).unwrap();
            fedtune_proto::simd::allow_avx2(true);
            next
        };
        let (baseline, avx2) = (round(false), round(true));
        assert_ne!(baseline, global);
        assert_eq!(baseline, avx2);
    }
}
