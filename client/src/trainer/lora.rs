//! The LoRA trainer: the round's global adapter in, the locally trained adapter out, on the
//! device's own text (already tokenized; it never leaves the device). The base model stays
//! frozen and quantized; only the adapter's tensors travel.
//!
//! On the wire an adapter is a bundle of f32 tensors named as in llama.cpp's GGUF LoRA files
//! (`blk.{i}.attn_q.weight.lora_a` `[r, in]`, `….lora_b` `[out, r]`).
//! The round's [`TrainingPlan`](fedtune_proto::TrainingPlan) gives the local steps, batch
//! size, learning rate, optimiser, clipping, accumulation and FedProx's μ.

use std::sync::Arc;

use fedtune_proto::{Bundle, LocalOptimizer, Tensor};

use super::{LocalUpdate, TaskContext, Trainer, TrainerError};
use fedtune_llm::backprop::{BaseView, Example, FitConfig, OptimizerKind, Schedule, evaluate, fit};
use fedtune_llm::llama::LlamaModel;
use fedtune_llm::lora::LoraAdapter;

/// `adapter` as a bundle of f32 tensors.
pub fn adapter_bundle(adapter: &LoraAdapter) -> Bundle {
    factor_bundle(adapter, true)
}

/// FFA-LoRA's form of `adapter` (Sun et al. 2024): its B tensors only. Every A stays at
/// its seeded initialisation, the same on every device, so it never travels.
pub fn b_bundle(adapter: &LoraAdapter) -> Bundle {
    factor_bundle(adapter, false)
}

/// Every module's `lora_a` (if `with_a`) and `lora_b`, in module order.
fn factor_bundle(adapter: &LoraAdapter, with_a: bool) -> Bundle {
    let mut tensors = Vec::with_capacity(2 * adapter.modules.len());
    for m in &adapter.modules {
        if with_a {
            tensors.push(Tensor::from_f32(
                format!("{}.lora_a", m.name()),
                vec![m.rank, m.in_dim],
                &m.a,
            ));
        }
        tensors.push(Tensor::from_f32(
            format!("{}.lora_b", m.name()),
            vec![m.out_dim, m.rank],
            &m.b,
        ));
    }
    let tensors = tensors
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("shapes match the values");
    Bundle::new(tensors).expect("module names are distinct")
}

/// The adapter a bundle holds, checked tensor by tensor against `like` (same names, same
/// shapes, finite values). A bundle of B tensors only ([`b_bundle`]) takes every A from
/// `like`.
pub fn adapter_from_bundle(
    bundle: &Bundle,
    like: &LoraAdapter,
) -> Result<LoraAdapter, TrainerError> {
    let mut out = like.clone();
    let n = like.modules.len();
    let b_only = bundle.tensors().len() == n;
    if !b_only && bundle.tensors().len() != 2 * n {
        return Err(TrainerError::Model(format!(
            "the global model has {} tensors, this adapter {} (or {n}: B only)",
            bundle.tensors().len(),
            2 * n
        )));
    }
    for m in &mut out.modules {
        let prefix = m.name();
        let factors = [
            ("lora_a", [m.rank, m.in_dim], &mut m.a),
            ("lora_b", [m.out_dim, m.rank], &mut m.b),
        ];
        for (suffix, shape, values) in factors.into_iter().skip(usize::from(b_only)) {
            let name = format!("{prefix}.{suffix}");
            let t = bundle
                .get(&name)
                .ok_or_else(|| TrainerError::Model(format!("missing tensor `{name}`")))?;
            if t.shape() != shape {
                return Err(TrainerError::Model(format!(
                    "`{name}` has shape {:?}, expected {shape:?}",
                    t.shape()
                )));
            }
            if let Some(i) = t.first_non_finite() {
                return Err(TrainerError::Model(format!(
                    "`{name}` is not finite at {i}"
                )));
            }
            values.copy_from_slice(&t.to_f32());
        }
    }
    Ok(out)
}

/// Trains a LoRA adapter on one device's examples.
#[derive(Clone)]
pub struct LoraTrainer {
    model: Arc<LlamaModel>,
    /// The adapter's shape and hyper-parameters (its values come from the server).
    template: LoraAdapter,
    examples: Vec<Example>,
    seed: u64,
    /// Multiplies the round's local steps (device tiers: slower devices do less).
    steps_scale: f64,
    /// Measure the received adapter on every local example before training
    /// (`train_loss_before`); costs a forward pass over the data.
    eval_before: bool,
    /// FFA-LoRA: A stays the template's (seeded, shared); B alone is trained and travels.
    frozen_a: bool,
}

impl LoraTrainer {
    /// A trainer for adapters shaped like `template`, on `examples`. Seeds batch order and
    /// dropout (mixed with the round).
    pub fn new(
        model: Arc<LlamaModel>,
        template: LoraAdapter,
        examples: Vec<Example>,
        seed: u64,
    ) -> Result<Self, TrainerError> {
        template
            .validate(&model.cfg)
            .map_err(|e| TrainerError::Model(e.to_string()))?;
        if examples.iter().all(|e| e.n_targets() == 0) {
            return Err(TrainerError::NoData(
                "no local example has a token to predict",
            ));
        }
        Ok(Self {
            model,
            template,
            examples,
            seed,
            steps_scale: 1.0,
            eval_before: true,
            frozen_a: false,
        })
    }

    /// Runs `scale` × the round's local steps (at least one).
    pub fn with_steps_scale(mut self, scale: f64) -> Self {
        self.steps_scale = scale;
        self
    }

    /// Whether to report `train_loss_before` (a forward pass over all local examples).
    pub fn with_eval_before(mut self, on: bool) -> Self {
        self.eval_before = on;
        self
    }

    /// FFA-LoRA: trains B only, keeping the template's A, and sends B only.
    pub fn with_frozen_a(mut self, on: bool) -> Self {
        self.frozen_a = on;
        self
    }

    /// The mean loss per target of `global` on this device's examples.
    pub fn loss(&self, global: &Bundle) -> Result<f64, TrainerError> {
        self.eval(&adapter_from_bundle(global, &self.template)?)
    }

    fn eval(&self, adapter: &LoraAdapter) -> Result<f64, TrainerError> {
        let base = BaseView::of_model(&self.model);
        let (loss, _) = evaluate(&base, Some(adapter), &self.examples, 8)?;
        Ok(loss)
    }

    fn fit_config(&self, task: &TaskContext) -> FitConfig {
        let p = &task.plan;
        FitConfig {
            steps: ((f64::from(p.local_steps) * self.steps_scale).round() as u64).max(1),
            batch_size: (p.batch_size as usize).max(1),
            grad_accum: p.grad_accum as usize,
            lr: p.learning_rate,
            schedule: Schedule::Constant,
            optimizer: match p.optimizer {
                LocalOptimizer::AdamW { weight_decay } => OptimizerKind::AdamW { weight_decay },
                LocalOptimizer::Sgd { momentum } => OptimizerKind::Sgd { momentum },
            },
            max_grad_norm: p.max_grad_norm,
            prox_mu: p.prox_mu,
            checkpoint: false,
            seed: self.seed ^ task.round.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            freeze_lora_a: self.frozen_a,
        }
    }
}

impl Trainer for LoraTrainer {
    fn train(&mut self, global: &Bundle, task: &TaskContext) -> Result<LocalUpdate, TrainerError> {
        let mut adapter = adapter_from_bundle(global, &self.template)?;
        let cfg = self.fit_config(task);
        let mut metrics = Vec::with_capacity(3);
        if self.eval_before {
            metrics.push(("train_loss_before".into(), self.eval(&adapter)?));
        }
        let base = BaseView::of_model(&self.model);
        let summary = fit(&base, &mut adapter, &self.examples, &cfg, |_| {})?;
        metrics.push(("train_loss".into(), summary.mean_loss));
        metrics.push(("train_tokens".into(), summary.tokens as f64));
        Ok(LocalUpdate {
            model: match self.frozen_a {
                true => b_bundle(&adapter),
                false => adapter_bundle(&adapter),
            },
            num_examples: self.examples.len() as u64,
            metrics,
        })
    }

    fn lora_rank(&self) -> u32 {
        self.template.config.rank as u32
    }
}
