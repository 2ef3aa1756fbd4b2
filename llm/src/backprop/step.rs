//! One optimisation step (plain SGD, or any [`Optimizer`] with gradient clipping), refusing to
//! apply a diverged step.

use super::optim::{Optimizer, clip_grad_norm};
use super::{BaseView, Grads, LossStats, Sequence, TrainError, TrainOptions, loss_and_grads};
use crate::lora::LoraAdapter;

/// `θ ← θ − lr·∇` for every LoRA factor of `adapter`.
pub fn sgd_step(adapter: &mut LoraAdapter, grads: &Grads, lr: f32) -> Result<(), TrainError> {
    if grads.lora.len() != adapter.modules.len() {
        return Err(TrainError::Mismatch(format!(
            "{} gradient modules for {} adapter modules",
            grads.lora.len(),
            adapter.modules.len()
        )));
    }
    for (m, g) in adapter.modules.iter_mut().zip(&grads.lora) {
        if (m.layer, m.proj, m.a.len(), m.b.len()) != (g.layer, g.proj, g.a.len(), g.b.len()) {
            return Err(TrainError::Mismatch(format!(
                "gradients of {} for the adapter of {}",
                g.name(),
                m.name()
            )));
        }
    }
    for (m, g) in adapter.modules.iter_mut().zip(&grads.lora) {
        for (p, &d) in m.a.iter_mut().zip(&g.a).chain(m.b.iter_mut().zip(&g.b)) {
            *p -= lr * d;
        }
    }
    Ok(())
}

/// Loss and gradients of `batch` at step `opts.step`, then an SGD step of rate `lr` on the
/// adapter. A NaN or infinite loss or gradient is [`TrainError::NonFinite`] naming the step,
/// and leaves the adapter as it was.
pub fn train_step(
    base: &BaseView,
    adapter: &mut LoraAdapter,
    batch: &[Sequence],
    opts: &TrainOptions,
    lr: f32,
) -> Result<LossStats, TrainError> {
    let (stats, grads) = loss_and_grads(base, Some(adapter), batch, opts)?;
    if let Some(name) = grads.first_non_finite() {
        return Err(TrainError::NonFinite {
            step: opts.step,
            what: format!("the gradient of {name}"),
        });
    }
    sgd_step(adapter, &grads, lr)?;
    Ok(stats)
}

/// What [`train_step_with`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    pub loss: LossStats,
    /// The gradients' global L2 norm before clipping.
    pub grad_norm: f64,
}

/// Loss and gradients of `batch` at step `opts.step`, gradients clipped to a global norm of
/// `max_grad_norm` (if given), then `optimizer`'s update at rate `lr` on the adapter. Like
/// [`train_step`], a non-finite loss or gradient is [`TrainError::NonFinite`] and changes
/// nothing (neither the adapter nor the optimiser's state).
pub fn train_step_with(
    base: &BaseView,
    adapter: &mut LoraAdapter,
    batch: &[Sequence],
    opts: &TrainOptions,
    optimizer: &mut dyn Optimizer,
    lr: f32,
    max_grad_norm: Option<f64>,
) -> Result<StepStats, TrainError> {
    let (loss, mut grads) = loss_and_grads(base, Some(adapter), batch, opts)?;
    if let Some(name) = grads.first_non_finite() {
        return Err(TrainError::NonFinite {
            step: opts.step,
            what: format!("the gradient of {name}"),
        });
    }
    let grad_norm = match max_grad_norm {
        Some(max) => clip_grad_norm(&mut grads, max),
        None => grads.norm(),
    };
    optimizer.step(&mut adapter.tensors_mut(), &grads.values(), lr)?;
    Ok(StepStats { loss, grad_norm })
}
