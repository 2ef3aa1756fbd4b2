//! The update a device sends: its trainer's local model (or delta) minus the global model, in
//! the global model's dtypes, proved finite before anything leaves the device.

use fedtune_proto::{Bundle, FiniteBundle, Tensor};

use crate::{ClientError, TaskContext, Trainer, TrainerError};

/// Trains once and forms the update to send: the trainer's own delta
/// ([`Trainer::train_delta`], checked against the model's tensors) or [`delta`] of its local
/// model, then proved finite (a diverged trainer or an overflowing difference is refused here,
/// naming where, before anything is sent).
pub fn local_update(
    t: &mut impl Trainer,
    global: &Bundle,
    ctx: &TaskContext,
) -> Result<(crate::LocalUpdate, FiniteBundle), ClientError> {
    let (update, delta) = match t.train_delta(global, ctx) {
        Some(update) => {
            let update = update?;
            if update.model.manifest() != global.manifest() {
                return Err(TrainerError::Model(
                    "the update's tensors differ from the model's".into(),
                )
                .into());
            }
            let delta = update.model.clone();
            (update, delta)
        }
        None => {
            let update = t.train(global, ctx)?;
            let delta = delta(&update.model, global)?;
            (update, delta)
        }
    };
    let delta = delta
        .into_finite()
        .map_err(|e| ClientError::NonFiniteUpdate(e.to_string()))?;
    Ok((update, delta))
}

/// The update a device sends: local − global, per tensor, in the global model's dtypes
/// ([`local_update`] proves it finite).
pub fn delta(local: &Bundle, global: &Bundle) -> Result<Bundle, ClientError> {
    if local.manifest() != global.manifest() {
        return Err(ClientError::Train(TrainerError::Model(
            "trainer changed the model's tensors or shapes".into(),
        )));
    }
    let tensors = local
        .tensors()
        .iter()
        .zip(global.tensors())
        .map(|(l, g)| {
            let (lv, gv) = (l.to_f32(), g.to_f32());
            let d: Vec<f32> = lv.iter().zip(gv.iter()).map(|(a, b)| a - b).collect();
            Ok(match g.dtype() {
                fedtune_proto::DType::F32 => Tensor::from_f32_vec(g.name(), g.shape().to_vec(), d)?,
                other => Tensor::from_f32_as(g.name(), g.shape().to_vec(), &d, other)?,
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    Ok(Bundle::new(tensors)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalUpdate;

    fn bundle(v: &[f32]) -> Bundle {
        Bundle::new(vec![Tensor::from_f32("w", vec![v.len()], v).unwrap()]).unwrap()
    }

    /// Returns `local` as its model, or as its delta when `as_delta`.
    struct Fixed {
        local: Bundle,
        as_delta: bool,
    }

    impl Trainer for Fixed {
        fn train(&mut self, _: &Bundle, _: &TaskContext) -> Result<LocalUpdate, TrainerError> {
            Ok(LocalUpdate {
                model: self.local.clone(),
                num_examples: 1,
                metrics: Vec::new(),
            })
        }

        fn train_delta(
            &mut self,
            g: &Bundle,
            c: &TaskContext,
        ) -> Option<Result<LocalUpdate, TrainerError>> {
            self.as_delta.then(|| self.train(g, c))
        }
    }

    /// Both ways of forming the update give local − global, and a non-finite value (from the
    /// trainer, or from an overflowing difference) is refused naming where it is.
    #[test]
    fn updates_are_differences_checked_finite() {
        let ctx = TaskContext {
            round: 1,
            model_version: 0,
            plan: Default::default(),
        };
        let mut values = vec![1.0f32; 5000];
        let global = bundle(&values);
        values[4100] = 3.5;
        let mut t = Fixed {
            local: bundle(&values),
            as_delta: false,
        };
        let (_, d) = local_update(&mut t, &global, &ctx).unwrap();
        let d = d.into_bundle();
        let want: Vec<f32> = values.iter().map(|v| v - 1.0).collect();
        assert_eq!(d, bundle(&want));
        let mut t = Fixed {
            local: bundle(&want),
            as_delta: true,
        };
        assert_eq!(
            local_update(&mut t, &global, &ctx).unwrap().1.into_bundle(),
            bundle(&want)
        );

        values[4097] = f32::NAN;
        let mut t = Fixed {
            local: bundle(&values),
            as_delta: false,
        };
        let e = local_update(&mut t, &global, &ctx).unwrap_err().to_string();
        assert!(e.contains("non-finite value at element 4097"), "{e}");
        let mut t = Fixed {
            local: bundle(&values),
            as_delta: true,
        };
        let e = local_update(&mut t, &global, &ctx).unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
        // f32::MAX − (−f32::MAX) overflows to infinity.
        let mut t = Fixed {
            local: bundle(&[f32::MAX; 3]),
            as_delta: false,
        };
        let e = local_update(&mut t, &bundle(&[-f32::MAX; 3]), &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element 0"), "overflow: {e}");
        let e = delta(&bundle(&[0.0; 4]), &bundle(&[0.0; 3]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shapes"), "{e}");
    }
}
