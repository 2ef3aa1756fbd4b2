//! LoRA training on a frozen base model, with analytic gradients.
//!
//! The base weights stay in the model file's format (quantized or not): every product with a
//! base matrix, forward (`x·Wᵀ`) and backward (`dy·W`), dequantizes a few rows at a time
//! ([`linalg`]). A batch is a set of independent causal sequences, packed one after the other
//! (each from position 0); the loss is the mean cross-entropy of next-token prediction over
//! the unmasked targets. [`loss_and_grads`] returns the gradients of every LoRA factor and,
//! in the full-parameter mode ([`TrainOptions::base_grads`], for small f32 models held as
//! [`Params`]), of every base weight. Activation checkpointing
//! ([`TrainOptions::checkpoint`]) keeps only each block's input and recomputes the block in
//! the backward pass.
//!
//! - [`lora`]: adapter configuration, initialisation and validation;
//! - [`params`]: the base weights as training reads them, and owned f32 weights;
//! - [`forward`] / [`backward`]: the training forward (keeping what the backward needs) and
//!   the backward pass;
//! - [`grads`]: gradient sets (accumulation, scaling, norms);
//! - [`optim`]: SGD with momentum, AdamW, learning-rate schedules, gradient clipping;
//! - [`fit`]: a run of steps over a dataset (batches, accumulation, schedule, FedProx), for an
//!   adapter ([`fit()`]) or every weight of a small model ([`fit_full`]);
//! - [`pretrain`]: initial weights of a new small model, and its GGUF file;
//! - [`step`]: [`train_step`] (plain SGD) and [`train_step_with`] (any optimiser, clipping),
//!   which refuse to apply a non-finite loss or gradient.

mod attention;
mod backward;
mod error;
mod fit;
mod forward;
mod grads;
mod linalg;

mod ops;
mod optim;
mod params;
mod pretrain;
mod step;

pub use backward::loss_and_grads;
pub use error::TrainError;
pub use fit::{
    Example, FitConfig, FitSummary, OptimizerKind, StepReport, Weights, evaluate, fit, fit_full,
    windows,
};
pub use forward::{check_trainable, loss};
pub use grads::Grads;
pub use optim::{AdamW, Optimizer, Schedule, Sgd, clip_grad_norm};
pub use params::{BaseView, LayerParams, LayerView, Params};
pub use pretrain::{init_params, to_gguf};
pub use step::{StepStats, sgd_step, train_step, train_step_with};

/// One training sequence: its tokens and, optionally, which of them count as targets.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    pub tokens: &'a [u32],
    /// One flag per token: `mask[i]` says whether predicting token `i` (from tokens `..i`)
    /// counts in the loss (`mask[0]` is never used: nothing predicts the first token). `None`:
    /// every token after the first counts.
    pub mask: Option<&'a [bool]>,
}

impl<'a> Sequence<'a> {
    /// Every token after the first is a target.
    pub fn new(tokens: &'a [u32]) -> Self {
        Self { tokens, mask: None }
    }

    /// Only tokens whose `mask` flag is set are targets.
    pub fn masked(tokens: &'a [u32], mask: &'a [bool]) -> Self {
        Self {
            tokens,
            mask: Some(mask),
        }
    }
}

/// How [`loss`] and [`loss_and_grads`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrainOptions {
    /// The optimiser step this pass belongs to: seeds dropout and names the step in errors.
    pub step: u64,
    /// Training mode: LoRA dropout is applied (when the adapter has some).
    pub dropout: bool,
    /// Keep only each block's input during the forward and recompute the block in the
    /// backward (less memory, about one more forward pass of time).
    pub checkpoint: bool,
    /// Also compute the gradients of every base weight (full-parameter mode).
    pub base_grads: bool,
    /// Divide the summed loss by this rather than by the batch's number of targets: micro
    /// batches of one accumulated batch share the whole batch's count, so that summing their
    /// gradients ([`Grads::add`]) gives the gradient of the whole batch's mean.
    pub denominator: Option<f64>,
}

/// The loss of one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossStats {
    /// Summed negative log-likelihood (nats) over the targets.
    pub sum: f64,
    /// The number of targets.
    pub count: usize,
    /// What the gradients were divided by (the count, or [`TrainOptions::denominator`]).
    pub denominator: f64,
}

impl LossStats {
    /// The loss whose gradients were computed: `sum / denominator`.
    pub fn loss(&self) -> f64 {
        self.sum / self.denominator
    }

    /// Mean negative log-likelihood per target.
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}
