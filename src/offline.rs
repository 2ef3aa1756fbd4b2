//! One round of any strategy outside a federation (`fedtune aggregate`): the same
//! aggregators and strategies the server runs, fed from files.

use anyhow::{Context, bail};
use fedtune_proto::{Bundle, Tensor};
use fedtune_server::strategy::Strategy;

/// What the update files hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateForm {
    /// The devices' parameters after training (what Flower's `FitRes` carries).
    Parameters,
    /// Differences from the current model (what fedtune devices upload).
    Deltas,
}

/// The next model from `current` and the devices' `updates` (each with its example
/// count). Parameters are aggregated as updates of a zero model (so a rule that rebuilds a
/// device's parameters from the round's model and its update, such as FlexLoRA, gets them
/// exactly) and the result shifted by −current in f64: no f32 difference is ever rounded.
pub fn aggregate_round(
    strategy: &mut dyn Strategy,
    current: &Bundle,
    updates: &[(Bundle, u64)],
    form: UpdateForm,
) -> anyhow::Result<Bundle> {
    if updates.is_empty() {
        bail!("no updates given");
    }
    let zero = match form {
        UpdateForm::Parameters => zeros_like(current)?,
        UpdateForm::Deltas => current.clone(),
    };
    let mut aggregator = strategy.aggregator(&zero);
    for (i, (update, num_examples)) in updates.iter().enumerate() {
        if *num_examples == 0 {
            bail!("update {}: the example count must be at least 1", i + 1);
        }
        update
            .check_finite()
            .with_context(|| format!("update {}", i + 1))?;
        aggregator
            .fold(update, strategy.weight(*num_examples))
            .with_context(|| format!("update {}", i + 1))?;
    }
    let mut aggregate = aggregator.finish()?;
    if form == UpdateForm::Parameters {
        aggregate = aggregate.minus(current)?;
    }
    Ok(strategy.apply(current, aggregate)?)
}

/// A model of zeros with `like`'s names, shapes and dtypes.
fn zeros_like(like: &Bundle) -> anyhow::Result<Bundle> {
    let tensors = like
        .tensors()
        .iter()
        .map(|t| {
            Tensor::from_f32_as(
                t.name(),
                t.shape().to_vec(),
                &vec![0.0; t.numel()],
                t.dtype(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bundle::new(tensors)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fedtune_server::strategy::{Params, build};

    fn bundle(v: &[f32]) -> Bundle {
        Bundle::new(vec![Tensor::from_f32("w", vec![v.len()], v).unwrap()]).unwrap()
    }

    /// Parameters and the same updates as deltas give the same model, for a mean rule and a
    /// robust one.
    #[test]
    fn parameters_and_deltas_agree() {
        let current = bundle(&[1.0, -2.0, 0.5]);
        let params = [
            (bundle(&[1.5, -2.0, 0.0]), 3),
            (bundle(&[0.5, -1.0, 0.5]), 1),
            (bundle(&[9.0, 9.0, 9.0]), 2),
        ];
        let deltas: Vec<(Bundle, u64)> = params
            .iter()
            .map(|(b, n)| {
                let d: Vec<f32> = b.tensors()[0]
                    .to_f32()
                    .iter()
                    .zip(current.tensors()[0].to_f32().iter())
                    .map(|(p, c)| p - c)
                    .collect();
                (bundle(&d), *n)
            })
            .collect();
        for name in ["fedavg", "fedmedian"] {
            let run = |u: &[(Bundle, u64)], form| {
                let mut s = build(name, &Params::default()).unwrap();
                aggregate_round(s.as_mut(), &current, u, form).unwrap()
            };
            assert_eq!(
                run(&params, UpdateForm::Parameters),
                run(&deltas, UpdateForm::Deltas),
                "{name}"
            );
        }
        let mut s = build("fedavg", &Params::default()).unwrap();
        let nan = [(bundle(&[f32::NAN, 0.0, 0.0]), 1)];
        assert!(aggregate_round(s.as_mut(), &current, &nan, UpdateForm::Deltas).is_err());
        assert!(aggregate_round(s.as_mut(), &current, &[], UpdateForm::Deltas).is_err());
    }
}
