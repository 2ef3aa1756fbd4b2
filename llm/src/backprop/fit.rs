//! A training run: optimiser steps over a set of examples in seeded random batches, with
//! gradient accumulation, clipping, a learning-rate schedule and FedProx's proximal term.
//! What the device does in a round, what `fedtune finetune` does, and what `bench train`
//! times.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::optim::{AdamW, Optimizer, Schedule, Sgd, clip_grad_norm};
use super::{
    BaseView, Grads, LossStats, Params, Sequence, TrainError, TrainOptions, loss, loss_and_grads,
};
use crate::llama::LlamaConfig;
use crate::lora::LoraAdapter;

/// One training example: a token sequence and, optionally, which tokens are targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    /// `mask[i]`: token `i` counts in the loss (see [`Sequence::mask`]); `None`: all do.
    pub mask: Option<Vec<bool>>,
}

impl Example {
    pub fn sequence(&self) -> Sequence<'_> {
        Sequence {
            tokens: &self.tokens,
            mask: self.mask.as_deref(),
        }
    }

    /// The number of tokens predicted in the loss.
    pub fn n_targets(&self) -> usize {
        match &self.mask {
            Some(m) => m.iter().skip(1).filter(|&&b| b).count(),
            None => self.tokens.len().saturating_sub(1),
        }
    }
}

/// Cuts token lists into examples of at most `seq_len` tokens (the last piece of each list
/// kept if it has something to predict).
pub fn windows(lists: &[Vec<u32>], seq_len: usize) -> Vec<Example> {
    lists
        .iter()
        .flat_map(|t| t.chunks(seq_len.max(2)))
        .filter(|c| c.len() >= 2)
        .map(|c| Example {
            tokens: c.to_vec(),
            mask: None,
        })
        .collect()
}

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    AdamW { weight_decay: f32 },
    Sgd { momentum: f32 },
}

impl OptimizerKind {
    fn build(self) -> Box<dyn Optimizer> {
        match self {
            OptimizerKind::AdamW { weight_decay } => {
                Box::new(AdamW::new(0.9, 0.999, 1e-8, weight_decay))
            }
            OptimizerKind::Sgd { momentum } => Box::new(Sgd::new(momentum, 0.0, false)),
        }
    }
}

/// How a run trains.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    pub steps: u64,
    /// Examples per optimiser step.
    pub batch_size: usize,
    /// Micro-batches each step's batch is split into (gradients accumulated; bounds memory).
    pub grad_accum: usize,
    pub lr: f32,
    pub schedule: Schedule,
    pub optimizer: OptimizerKind,
    /// Clip gradients to this global L2 norm.
    pub max_grad_norm: Option<f64>,
    /// FedProx's μ: adds μ/2·‖w − w_start‖² to the loss (0: off).
    pub prox_mu: f32,
    /// Recompute each block in the backward instead of keeping its activations.
    pub checkpoint: bool,
    /// Seeds the batch order and dropout.
    pub seed: u64,
    /// Train every LoRA B and leave every A as it is (FFA-LoRA, Sun et al. 2024: A stays at
    /// its seeded initialisation, shared by every device, so averaging B is exact).
    pub freeze_lora_a: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 4,
            grad_accum: 1,
            lr: 1e-3,
            schedule: Schedule::Constant,
            optimizer: OptimizerKind::AdamW { weight_decay: 0.0 },
            max_grad_norm: Some(1.0),
            prox_mu: 0.0,
            checkpoint: false,
            seed: 0,
            freeze_lora_a: false,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub step: u64,
    /// Mean loss over the step's targets (before the update).
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f32,
    /// Tokens in the step's batch.
    pub tokens: usize,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FitSummary {
    pub steps: u64,
    /// Mean of the steps' losses.
    pub mean_loss: f64,
    pub tokens: usize,
    /// Examples seen (with repeats).
    pub examples: usize,
}

/// What a run can train: a set of named f32 tensors, in the order their gradients come in
/// [`Grads::tensors`].
pub trait Weights: Clone {
    fn named(&self) -> Vec<(String, &[f32])>;
    fn values_mut(&mut self) -> Vec<&mut [f32]>;
}

impl Weights for LoraAdapter {
    fn named(&self) -> Vec<(String, &[f32])> {
        self.tensors()
    }
    fn values_mut(&mut self) -> Vec<&mut [f32]> {
        self.tensors_mut()
    }
}

impl Weights for Params {
    fn named(&self) -> Vec<(String, &[f32])> {
        self.tensors()
    }
    fn values_mut(&mut self) -> Vec<&mut [f32]> {
        self.tensors_mut()
    }
}

/// Trains `adapter` on `examples` for `cfg.steps` steps, calling `on_step` after each. A NaN
/// or infinite loss, gradient or updated value stops the run with [`TrainError::NonFinite`]
/// naming the step; the adapter then holds the last good step's values.
pub fn fit(
    base: &BaseView,
    adapter: &mut LoraAdapter,
    examples: &[Example],
    cfg: &FitConfig,
    on_step: impl FnMut(&StepReport),
) -> Result<FitSummary, TrainError> {
    let grads = |a: &LoraAdapter, seqs: &[Sequence], opts: &TrainOptions| {
        loss_and_grads(base, Some(a), seqs, opts)
    };
    fit_weights(adapter, examples, cfg, grads, on_step)
}

/// [`fit`] for every weight of a small f32 model of shape `model` (full-parameter training:
/// what `fedtune pretrain` runs).
pub fn fit_full(
    model: &LlamaConfig,
    params: &mut Params,
    examples: &[Example],
    cfg: &FitConfig,
    on_step: impl FnMut(&StepReport),
) -> Result<FitSummary, TrainError> {
    let grads = |p: &Params, seqs: &[Sequence], opts: &TrainOptions| {
        let opts = TrainOptions {
            base_grads: true,
            ..*opts
        };
        loss_and_grads(&p.view(model), None, seqs, &opts)
    };
    fit_weights(params, examples, cfg, grads, on_step)
}

/// The run behind [`fit`] and [`fit_full`]: `grads_of(weights, batch, options)` gives a
/// micro-batch's loss and gradients.
fn fit_weights<W: Weights>(
    weights: &mut W,
    examples: &[Example],
    cfg: &FitConfig,
    grads_of: impl Fn(&W, &[Sequence], &TrainOptions) -> Result<(LossStats, Grads), TrainError>,
    mut on_step: impl FnMut(&StepReport),
) -> Result<FitSummary, TrainError> {
    if examples.iter().all(|e| e.n_targets() == 0) {
        return Err(TrainError::EmptyBatch);
    }
    let start = (cfg.prox_mu > 0.0).then(|| weights.clone());
    let mut optimizer = cfg.optimizer.build();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut summary = FitSummary::default();
    for step in 0..cfg.steps {
        let batch: Vec<&Example> = (0..cfg.batch_size.max(1))
            .map(|_| {
                if order.is_empty() {
                    order = (0..examples.len()).collect();
                    order.shuffle(&mut rng);
                }
                &examples[order.pop().expect("refilled above")]
            })
            .collect();
        let (loss, mut grads) = batch_grads(weights, &batch, cfg, step, &grads_of)?;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "the loss".into(),
            });
        }
        if let Some(name) = grads.first_non_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: format!("the gradient of {name}"),
            });
        }
        if let Some(start) = &start {
            add_prox(&mut grads, weights, start, cfg.prox_mu);
        }
        let trained: Vec<bool> = weights
            .named()
            .iter()
            .map(|(name, _)| !(cfg.freeze_lora_a && name.ends_with(".lora_a")))
            .collect();
        for (g, _) in grads
            .tensors_mut()
            .into_iter()
            .zip(&trained)
            .filter(|(_, t)| !**t)
        {
            g.fill(0.0);
        }
        let grad_norm = match cfg.max_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, max),
            None => grads.norm(),
        };
        let lr = cfg.schedule.lr(cfg.lr, step);
        let last_good = weights.clone();
        let mut params: Vec<&mut [f32]> = keep(weights.values_mut(), &trained);
        optimizer.step(&mut params, &keep(grads.values(), &trained), lr)?;
        if let Some((name, _)) = weights
            .named()
            .into_iter()
            .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
        {
            *weights = last_good;
            return Err(TrainError::NonFinite {
                step,
                what: format!("the update of {name}"),
            });
        }
        let tokens = batch.iter().map(|e| e.tokens.len()).sum();
        summary.steps += 1;
        summary.mean_loss += (loss - summary.mean_loss) / summary.steps as f64;
        summary.tokens += tokens;
        summary.examples += batch.len();
        on_step(&StepReport {
            step,
            loss,
            grad_norm,
            lr,
            tokens,
        });
    }
    Ok(summary)
}

/// The items of `all` whose flag in `trained` is set.
fn keep<T>(all: Vec<T>, trained: &[bool]) -> Vec<T> {
    all.into_iter()
        .zip(trained)
        .filter_map(|(x, &t)| t.then_some(x))
        .collect()
}

/// Mean loss and summed gradients of `batch`, in `cfg.grad_accum` micro-batches that share
/// the whole batch's target count.
fn batch_grads<W>(
    weights: &W,
    batch: &[&Example],
    cfg: &FitConfig,
    step: u64,
    grads_of: &impl Fn(&W, &[Sequence], &TrainOptions) -> Result<(LossStats, Grads), TrainError>,
) -> Result<(f64, Grads), TrainError> {
    let targets: usize = batch.iter().map(|e| e.n_targets()).sum();
    let opts = TrainOptions {
        step,
        dropout: true,
        checkpoint: cfg.checkpoint,
        base_grads: false,
        denominator: Some(targets.max(1) as f64),
    };
    let per_micro = batch.len().div_ceil(cfg.grad_accum.max(1));
    let mut total: Option<Grads> = None;
    let mut sum = 0.0;
    for micro in batch.chunks(per_micro) {
        let seqs: Vec<Sequence> = micro
            .iter()
            .filter(|e| e.n_targets() > 0)
            .map(|e| e.sequence())
            .collect();
        if seqs.is_empty() {
            continue;
        }
        let (stats, grads) = grads_of(weights, &seqs, &opts)?;
        sum += stats.sum;
        match &mut total {
            Some(t) => t.add(&grads)?,
            None => total = Some(grads),
        }
    }
    let grads = total.ok_or(TrainError::EmptyBatch)?;
    Ok((sum / targets.max(1) as f64, grads))
}

/// `∇ += μ·(w − w_start)`, the gradient of FedProx's μ/2·‖w − w_start‖².
fn add_prox<W: Weights>(grads: &mut Grads, weights: &W, start: &W, mu: f32) {
    let (now, then) = (weights.named(), start.named());
    for ((g, (_, w)), (_, w0)) in grads.tensors_mut().into_iter().zip(&now).zip(&then) {
        for ((g, &w), &w0) in g.iter_mut().zip(w.iter()).zip(w0.iter()) {
            *g += mu * (w - w0);
        }
    }
}

/// Mean loss per target of `adapter` (or the bare base) over `examples`, in batches of
/// `batch_size`: held-out evaluation. Returns (mean loss, targets).
pub fn evaluate(
    base: &BaseView,
    adapter: Option<&LoraAdapter>,
    examples: &[Example],
    batch_size: usize,
) -> Result<(f64, usize), TrainError> {
    let (mut sum, mut count) = (0.0, 0);
    let usable: Vec<&Example> = examples.iter().filter(|e| e.n_targets() > 0).collect();
    for chunk in usable.chunks(batch_size.max(1)) {
        let seqs: Vec<Sequence> = chunk.iter().map(|e| e.sequence()).collect();
        let stats = loss(base, adapter, &seqs, &TrainOptions::default())?;
        sum += stats.sum;
        count += stats.count;
    }
    if count == 0 {
        return Err(TrainError::EmptyBatch);
    }
    Ok((sum / count as f64, count))
}
