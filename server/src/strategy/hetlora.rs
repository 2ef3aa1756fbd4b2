//! Heterogeneous LoRA ranks (HetLoRA, Cho et al. 2024): devices of different classes train
//! adapters of different ranks against one global adapter at the largest rank. A device of
//! rank r downloads the global truncated to r (every `X.lora_a` [R, in] cut to its first r
//! rows, every `X.lora_b` [out, R] to its first r columns) and its update is widened back to
//! R before it is aggregated. Only the `lora_a`/`lora_b` naming convention is used: the server
//! still knows no architecture.
//!
//! What the components a device did not hold become is the strategy's choice ([`RankFill`]):
//! mean-based rules keep the global's value there (the device's update is zero: HetLoRA's
//! zero-padding, done on updates so that a share of low-rank devices does not shrink the
//! higher components every round); FlexLoRA sets the device's factors to zero there, so the
//! product it averages is the one the device actually trained.

use std::borrow::Cow;

use fedtune_proto::{Bundle, Tensor};

use super::StrategyError;

/// How a lower-rank update is widened to the global adapter's rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RankFill {
    /// The update is zero in the missing components: they keep the global's values.
    #[default]
    KeepGlobal,
    /// The device's factors are zero in the missing components (the update is −global there).
    ZeroFactors,
}

/// A LoRA factor tensor: which one, by its name's suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Factor {
    /// `X.lora_a` [r, in]: the rank is the rows.
    A,
    /// `X.lora_b` [out, r]: the rank is the columns.
    B,
}

fn factor(t: &Tensor) -> Option<(Factor, usize, usize)> {
    let [rows, cols] = *t.shape() else {
        return None;
    };
    if t.name().ends_with(".lora_a") {
        Some((Factor::A, rows, cols))
    } else if t.name().ends_with(".lora_b") {
        Some((Factor::B, rows, cols))
    } else {
        None
    }
}

/// The largest LoRA rank in `bundle` (`None`: it has no `*.lora_a`/`*.lora_b` factor).
pub fn lora_rank(bundle: &Bundle) -> Option<usize> {
    bundle
        .tensors()
        .iter()
        .filter_map(|t| {
            factor(t).map(|(f, rows, cols)| match f {
                Factor::A => rows,
                Factor::B => cols,
            })
        })
        .max()
}

/// `global` at rank `rank`: every factor of a larger rank cut to its first `rank` components;
/// other tensors as they are.
pub fn truncate(global: &Bundle, rank: usize) -> Result<Bundle, StrategyError> {
    let tensors = global
        .tensors()
        .iter()
        .map(|t| match factor(t) {
            Some((Factor::A, rows, cols)) if rows > rank => Tensor::from_f32_as(
                t.name(),
                vec![rank, cols],
                &t.to_f32()[..rank * cols],
                t.dtype(),
            ),
            Some((Factor::B, rows, cols)) if cols > rank => {
                let v = t.to_f32();
                let kept: Vec<f32> = v
                    .chunks(cols)
                    .flat_map(|row| &row[..rank])
                    .copied()
                    .collect();
                Tensor::from_f32_as(t.name(), vec![rows, rank], &kept, t.dtype())
            }
            _ => Ok(t.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bundle::new(tensors)?)
}

/// `update`, made against `global` truncated to a lower rank, widened to `global`'s shapes
/// (tensor for tensor, in `global`'s order) with `fill` in the components it lacks.
pub fn widen(update: &Bundle, global: &Bundle, fill: RankFill) -> Result<Bundle, StrategyError> {
    if update.tensors().len() != global.tensors().len() {
        return Err(StrategyError::Mismatch(format!(
            "the update has {} tensors, the global model {}",
            update.tensors().len(),
            global.tensors().len()
        )));
    }
    let tensors = global
        .tensors()
        .iter()
        .zip(update.tensors())
        .map(|(g, u)| widen_tensor(u, g, fill))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bundle::new(tensors)?)
}

/// `update` in `global`'s shapes: itself when a device trains the global adapter's rank,
/// else [`widen`]ed with `fill`.
pub fn at_global_shapes<'a>(
    update: &'a Bundle,
    global: &Bundle,
    fill: RankFill,
) -> Result<Cow<'a, Bundle>, StrategyError> {
    if same_shapes(update, global) {
        Ok(Cow::Borrowed(update))
    } else {
        widen(update, global, fill).map(Cow::Owned)
    }
}

/// Whether every tensor of `update` has the shape of its counterpart in `global`.
fn same_shapes(update: &Bundle, global: &Bundle) -> bool {
    update.tensors().len() == global.tensors().len()
        && update
            .tensors()
            .iter()
            .zip(global.tensors())
            .all(|(u, g)| u.shape() == g.shape())
}

fn widen_tensor(u: &Tensor, g: &Tensor, fill: RankFill) -> Result<Tensor, StrategyError> {
    if u.name() != g.name() {
        return Err(StrategyError::Mismatch(format!(
            "tensor `{}` where the global model has `{}`",
            u.name(),
            g.name()
        )));
    }
    if u.shape() == g.shape() {
        return Ok(u.clone());
    }
    let mismatch = || {
        StrategyError::Mismatch(format!(
            "tensor `{}` has shape {:?}: not the global's {:?} at a lower rank",
            u.name(),
            u.shape(),
            g.shape()
        ))
    };
    let (Some((f, rows, cols)), Some((_, g_rows, g_cols))) = (factor(u), factor(g)) else {
        return Err(mismatch());
    };
    let gv = g.to_f32();
    let uv = u.to_f32();
    // The value of global element `k` in the components the device lacked.
    let missing = |k: usize| match fill {
        RankFill::KeepGlobal => 0.0,
        RankFill::ZeroFactors => -gv[k],
    };
    let out: Vec<f32> = match f {
        Factor::A if cols == g_cols && rows < g_rows => (0..g_rows * g_cols)
            .map(|k| if k < rows * cols { uv[k] } else { missing(k) })
            .collect(),
        Factor::B if rows == g_rows && cols < g_cols => (0..g_rows * g_cols)
            .map(|k| {
                let (i, j) = (k / g_cols, k % g_cols);
                if j < cols {
                    uv[i * cols + j]
                } else {
                    missing(k)
                }
            })
            .collect(),
        _ => return Err(mismatch()),
    };
    Ok(Tensor::from_f32_as(
        u.name(),
        g.shape().to_vec(),
        &out,
        u.dtype(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank-`r` adapter of one 3×2 module (plus a bias) whose values count up from `base`.
    fn adapter(r: usize, base: f32) -> Bundle {
        let a: Vec<f32> = (0..r * 2).map(|i| base + i as f32).collect();
        let b: Vec<f32> = (0..3 * r).map(|i| base + 100.0 + i as f32).collect();
        Bundle::new(vec![
            Tensor::from_f32("m.lora_a", vec![r, 2], &a).unwrap(),
            Tensor::from_f32("m.lora_b", vec![3, r], &b).unwrap(),
            Tensor::from_f32("bias", vec![2], &[7.0, 8.0]).unwrap(),
        ])
        .unwrap()
    }

    fn values(b: &Bundle, name: &str) -> Vec<f32> {
        b.get(name).unwrap().to_f32().into_owned()
    }

    #[test]
    fn truncation_keeps_the_first_components() {
        let g = adapter(3, 0.0);
        assert_eq!(lora_rank(&g), Some(3));
        let t = truncate(&g, 2).unwrap();
        assert_eq!(lora_rank(&t), Some(2));
        // A's first two rows; B's first two columns of each row.
        assert_eq!(values(&t, "m.lora_a"), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            values(&t, "m.lora_b"),
            [100.0, 101.0, 103.0, 104.0, 106.0, 107.0]
        );
        assert_eq!(values(&t, "bias"), [7.0, 8.0]);
        // A rank at or above the global's leaves it as it is.
        assert_eq!(truncate(&g, 3).unwrap().manifest(), g.manifest());
        assert_eq!(truncate(&g, 9).unwrap().manifest(), g.manifest());
        assert_eq!(lora_rank(&Bundle::new(vec![]).unwrap()), None);
    }

    #[test]
    fn widening_fills_the_missing_components() {
        let g = adapter(3, 0.0);
        let u = adapter(2, 1000.0);
        let keep = widen(&u, &g, RankFill::KeepGlobal).unwrap();
        assert_eq!(keep.manifest(), g.manifest());
        assert_eq!(
            values(&keep, "m.lora_a"),
            [1000.0, 1001.0, 1002.0, 1003.0, 0.0, 0.0]
        );
        assert_eq!(
            values(&keep, "m.lora_b"),
            [
                1100.0, 1101.0, 0.0, 1102.0, 1103.0, 0.0, 1104.0, 1105.0, 0.0
            ]
        );
        // Zero factors: the device's model (global + update) is zero where it had no rank.
        let zero = widen(&u, &g, RankFill::ZeroFactors).unwrap();
        assert_eq!(&values(&zero, "m.lora_a")[4..], [-4.0, -5.0]);
        let b = values(&zero, "m.lora_b");
        assert_eq!([b[2], b[5], b[8]], [-102.0, -105.0, -108.0]);
        // Truncating a widened update gives the update back.
        assert_eq!(
            values(&truncate(&zero, 2).unwrap(), "m.lora_b"),
            values(&u, "m.lora_b")
        );
    }

    #[test]
    fn widening_refuses_what_is_not_a_lower_rank() {
        let g = adapter(2, 0.0);
        for bad in [
            adapter(3, 0.0),
            Bundle::new(vec![
                Tensor::from_f32("m.lora_a", vec![1, 2], &[0.0; 2]).unwrap(),
            ])
            .unwrap(),
            Bundle::new(vec![
                Tensor::from_f32("m.lora_a", vec![1, 1], &[0.0]).unwrap(),
                Tensor::from_f32("m.lora_b", vec![3, 1], &[0.0; 3]).unwrap(),
                Tensor::from_f32("bias", vec![2], &[0.0; 2]).unwrap(),
            ])
            .unwrap(),
            Bundle::new(vec![
                Tensor::from_f32("m.lora_b", vec![3, 1], &[0.0; 3]).unwrap(),
                Tensor::from_f32("m.lora_a", vec![1, 2], &[0.0; 2]).unwrap(),
                Tensor::from_f32("bias", vec![2], &[0.0; 2]).unwrap(),
            ])
            .unwrap(),
        ] {
            assert!(widen(&bad, &g, RankFill::KeepGlobal).is_err());
        }
    }
}
