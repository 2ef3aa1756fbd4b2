//! FlexLoRA's server step (Bai et al., 2024): the example-weighted mean of the devices' LoRA
//! products B_i·A_i, factored back to the adapter's rank by truncated SVD. Averaging A and B
//! separately gives (Σ B_i)(Σ A_i), which is not the mean of the products; this rule merges
//! what the devices actually learnt (ΔW_i = B_i·A_i), as well as rank r allows.
//!
//! Tensors pair by name: `X.lora_a` [r, in] with `X.lora_b` [out, r] (a naming convention,
//! not model knowledge); every other tensor gets FedAvg's weighted mean. The products are
//! formed from the devices' full factors (the round's global plus each update) and never
//! materialised: each module's factors are stacked, QR-reduced, and only the small core is
//! decomposed ([`super::lowrank::refactor`]).

use super::lowrank::{Mat, refactor};
use super::staged::{Rows, StagedRule};
use super::{RankFill, StrategyError};

#[derive(Debug, Clone, Copy, Default)]
pub struct FlexLora;

impl StagedRule for FlexLora {
    fn name(&self) -> &'static str {
        "flexlora"
    }

    /// A lower-rank device's factors are zero beyond its rank: its product is what it
    /// trained.
    fn rank_fill(&self) -> RankFill {
        RankFill::ZeroFactors
    }

    fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError> {
        let all: Vec<usize> = (0..rows.count()).collect();
        let mut out = rows.weighted_mean(&all);
        let layout = rows.layout();
        let total: f64 = all.iter().map(|&i| rows.weight(i)).sum();
        for (name, a_range) in &layout {
            let Some(module) = name.strip_suffix(".lora_a") else {
                continue;
            };
            let b_name = format!("{module}.lora_b");
            let (_, b_range) = layout.iter().find(|(n, _)| *n == b_name).ok_or_else(|| {
                StrategyError::Mismatch(format!("`{name}` has no `{b_name}` to pair with"))
            })?;
            let (a0, b0) = (global_mat(rows, name)?, global_mat(rows, &b_name)?);
            let rank = a0.rows;
            if b0.cols != rank {
                return Err(StrategyError::Mismatch(format!(
                    "`{name}` has rank {rank} but `{b_name}` has {} columns",
                    b0.cols
                )));
            }
            // Stacked, each device scaled by √(wᵢ/W): b_cat·a_cat = Σ (wᵢ/W)·Bᵢ·Aᵢ.
            let mut a_cat = Mat::zeros(rank * all.len(), a0.cols);
            let mut b_cat = Mat::zeros(b0.rows, rank * all.len());
            for &i in &all {
                let s = (rows.weight(i) / total).sqrt();
                let da = rows.row(i, a_range.clone());
                let db = rows.row(i, b_range.clone());
                for r in 0..rank {
                    for c in 0..a0.cols {
                        let k = r * a0.cols + c;
                        a_cat.data[(i * rank + r) * a0.cols + c] =
                            s * (a0.data[k] + f64::from(da[k]));
                    }
                }
                for o in 0..b0.rows {
                    for r in 0..rank {
                        let k = o * rank + r;
                        b_cat.data[o * b_cat.cols + i * rank + r] =
                            s * (b0.data[k] + f64::from(db[k]));
                    }
                }
            }
            let (a_new, b_new) = refactor(&b_cat, &a_cat, rank);
            if a_new.frobenius() == 0.0 {
                // The mean product is zero: keep the factors' mean (re-factoring would zero
                // both, and a LoRA module with A = B = 0 never trains again).
                continue;
            }
            for (o, (new, old)) in out[a_range.clone()]
                .iter_mut()
                .zip(a_new.data.iter().zip(&a0.data))
            {
                *o = new - old;
            }
            for (o, (new, old)) in out[b_range.clone()]
                .iter_mut()
                .zip(b_new.data.iter().zip(&b0.data))
            {
                *o = new - old;
            }
        }
        Ok(out)
    }
}

/// A 2-D tensor of the round's global model as a matrix.
fn global_mat(rows: &Rows, name: &str) -> Result<Mat, StrategyError> {
    let t = rows
        .global()
        .get(name)
        .ok_or_else(|| StrategyError::Mismatch(format!("no tensor `{name}`")))?;
    let [r, c] = t.shape() else {
        return Err(StrategyError::Mismatch(format!(
            "LoRA factor `{name}` is not 2-D: {:?}",
            t.shape()
        )));
    };
    let v = t.to_f32();
    Ok(Mat::from_fn(*r, *c, |i, j| f64::from(v[i * c + j])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Aggregator;
    use crate::strategy::staged::Staged;
    use fedtune_proto::{Bundle, Tensor};

    const OUT: usize = 5;
    const IN: usize = 4;
    const R: usize = 2;

    fn to_f32(m: &Mat) -> Vec<f32> {
        m.data.iter().map(|&x| x as f32).collect()
    }

    fn lora(a: &Mat, b: &Mat, bias: &[f32]) -> Bundle {
        Bundle::new(vec![
            Tensor::from_f32("m.lora_a", vec![a.rows, a.cols], &to_f32(a)).unwrap(),
            Tensor::from_f32("m.lora_b", vec![b.rows, b.cols], &to_f32(b)).unwrap(),
            Tensor::from_f32("m.bias", vec![bias.len()], bias).unwrap(),
        ])
        .unwrap()
    }

    fn m(rows: usize, cols: usize, seed: usize) -> Mat {
        Mat::from_fn(rows, cols, |i, j| {
            // Pseudo-random in [−1, 1] and full rank (a sum of sines is rank 2).
            let k = (i * 7 + j * 3 + seed * 11 + 1).wrapping_mul(2_654_435_761) % 10_007;
            k as f64 / 5003.0 - 1.0
        })
    }

    /// Stages the devices' full factors (as deltas from the global) and returns the
    /// combined deltas with the global's f64 factors.
    fn merge(global: &Bundle, devices: &[(Mat, Mat)], weights: &[f64]) -> (Mat, Mat, Vec<f64>) {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = Box::new(Staged::new(global, dir.path(), FlexLora));
        let ga = global.tensors()[0].to_f32();
        let gb = global.tensors()[1].to_f32();
        for ((a, b), &w) in devices.iter().zip(weights) {
            let da = Mat::from_fn(R, IN, |i, j| (a.at(i, j) as f32 - ga[i * IN + j]) as f64);
            let db = Mat::from_fn(OUT, R, |i, j| (b.at(i, j) as f32 - gb[i * R + j]) as f64);
            staged.fold(&lora(&da, &db, &[w as f32]), w).unwrap();
        }
        let agg = staged.finish().unwrap();
        let a = Mat::from_fn(R, IN, |i, j| {
            f64::from(ga[i * IN + j]) + agg.mean[0][i * IN + j]
        });
        let b = Mat::from_fn(OUT, R, |i, j| {
            f64::from(gb[i * R + j]) + agg.mean[1][i * R + j]
        });
        (a, b, agg.mean[2].clone())
    }

    /// Σ wᵢ·Bᵢ·Aᵢ / Σ wᵢ, from the factors as the devices hold them (f32).
    fn mean_product(devices: &[(Mat, Mat)], weights: &[f64]) -> Mat {
        let total: f64 = weights.iter().sum();
        let mut sum = Mat::zeros(OUT, IN);
        for ((a, b), &w) in devices.iter().zip(weights) {
            let (a, b) = (f32_mat(a), f32_mat(b));
            let p = b.mul(&a);
            for (s, x) in sum.data.iter_mut().zip(&p.data) {
                *s += w / total * x;
            }
        }
        sum
    }

    fn f32_mat(x: &Mat) -> Mat {
        Mat::from_fn(x.rows, x.cols, |i, j| f64::from(x.at(i, j) as f32))
    }

    fn dist(x: &Mat, y: &Mat) -> f64 {
        x.data
            .iter()
            .zip(&y.data)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// Devices whose products share one rank-2 column and row space: the mean product has
    /// rank 2, and B'·A' equals it exactly (f64 rounding); other tensors get the mean.
    #[test]
    fn a_rank_r_mean_of_products_is_reproduced_exactly() {
        let (a0, b0) = (m(R, IN, 1), m(OUT, R, 2));
        let global = lora(&a0, &b0, &[0.0]);
        let devices: Vec<(Mat, Mat)> = (0..3)
            .map(|i| (m(R, R, 10 + i).mul(&a0), b0.mul(&m(R, R, 20 + i))))
            .collect();
        let weights = [1.0, 2.0, 3.0];
        let (a, b, bias) = merge(&global, &devices, &weights);
        let want = mean_product(&devices, &weights);
        assert!(
            dist(&b.mul(&a), &want) < 1e-5 * want.frobenius(),
            "{}",
            dist(&b.mul(&a), &want)
        );
        assert!((bias[0] - 14.0 / 6.0).abs() < 1e-6, "{bias:?}");
        // Averaging the factors separately does not give the mean product.
        let (mut ma, mut mb) = (Mat::zeros(R, IN), Mat::zeros(OUT, R));
        for ((da, db), w) in devices.iter().zip(weights) {
            ma.data
                .iter_mut()
                .zip(&f32_mat(da).data)
                .for_each(|(s, x)| *s += w / 6.0 * x);
            mb.data
                .iter_mut()
                .zip(&f32_mat(db).data)
                .for_each(|(s, x)| *s += w / 6.0 * x);
        }
        assert!(dist(&mb.mul(&ma), &want) > 1e-2 * want.frobenius());
    }

    /// Unrelated devices: the mean product has rank > 2, and B'·A' is its best rank-2
    /// approximation: the residual² equals ‖M‖² − σ₁² − σ₂², with σ from power iteration.
    #[test]
    fn a_higher_rank_mean_is_truncated_optimally() {
        let (a0, b0) = (m(R, IN, 3), m(OUT, R, 4));
        let global = lora(&a0, &b0, &[0.0]);
        let devices: Vec<(Mat, Mat)> = (0..3)
            .map(|i| (m(R, IN, 30 + i), m(OUT, R, 40 + i)))
            .collect();
        let weights = [3.0, 1.0, 2.0];
        let (a, b, _) = merge(&global, &devices, &weights);
        let want = mean_product(&devices, &weights);
        let mut gram = want.t().mul(&want);
        let mut top = Vec::new();
        for _ in 0..R {
            let mut x = Mat::from_fn(IN, 1, |i, _| 1.0 + i as f64);
            let mut lambda = 0.0;
            for _ in 0..5000 {
                let y = gram.mul(&x);
                lambda = y.frobenius() / x.frobenius();
                x = Mat::from_fn(IN, 1, |i, _| y.at(i, 0) / y.frobenius());
            }
            top.push(lambda);
            let deflate = x.mul(&x.t());
            gram.data
                .iter_mut()
                .zip(&deflate.data)
                .for_each(|(g, d)| *g -= lambda * d);
        }
        let residual2 = dist(&b.mul(&a), &want).powi(2);
        let optimal2 = want.frobenius().powi(2) - top.iter().sum::<f64>();
        assert!(
            optimal2 > 1e-3,
            "the test needs a mean of rank > 2: {optimal2}"
        );
        assert!(
            (residual2 - optimal2).abs() < 1e-6 * want.frobenius().powi(2),
            "{residual2} vs {optimal2}"
        );
    }

    #[test]
    fn an_unpaired_factor_is_refused() {
        let global = Bundle::new(vec![
            Tensor::from_f32("x.lora_a", vec![1, 2], &[1.0, 2.0]).unwrap(),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut staged = Box::new(Staged::new(&global, dir.path(), FlexLora));
        staged.fold(&global, 1.0).unwrap();
        let err = staged.finish().unwrap_err().to_string();
        assert!(err.contains("x.lora_b"), "{err}");
    }
}
