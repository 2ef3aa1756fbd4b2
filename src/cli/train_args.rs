//! The optimisation flags that `finetune` and `pretrain` share. Step count, learning rate and
//! warm-up default per command (an adapter and a model from scratch want different ones).

use fedtune_llm::backprop::{FitConfig, OptimizerKind, Schedule};

#[derive(Debug, clap::Args, Clone)]
pub struct TrainArgs {
    /// Optimiser steps [default: finetune 100, pretrain 3000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Peak learning rate [default: finetune 1e-3, pretrain 3e-3].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Sequences per step [default: finetune 4, pretrain 16].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence; longer texts are cut into pieces [default: finetune 64, pretrain
    /// 128].
    #[arg(long)]
    pub seq: Option<usize>,
    /// Micro-batches per step (gradient accumulation: same result, less memory).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Learning-rate schedule after the warm-up.
    #[arg(long, value_parser = ["constant", "linear", "cosine"], default_value = "cosine")]
    pub schedule: String,
    /// Warm-up steps, linear from 0 [default: finetune 0, pretrain 100].
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long, value_parser = ["adamw", "sgd"], default_value = "adamw")]
    pub optimizer: String,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// SGD's momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Clip gradients to this global norm (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Recompute activations in the backward pass (less memory, ~30% slower).
    #[arg(long)]
    pub checkpoint: bool,
}

/// A command's defaults for the flags that have none of their own.
#[derive(Debug, Clone, Copy)]
pub struct TrainDefaults {
    pub steps: u64,
    pub batch: usize,
    pub seq: usize,
    pub lr: f32,
    pub warmup: u64,
}

impl TrainArgs {
    /// Tokens per sequence.
    pub fn seq(&self, d: TrainDefaults) -> usize {
        self.seq.unwrap_or(d.seq)
    }

    pub fn fit_config(&self, d: TrainDefaults, seed: u64) -> anyhow::Result<FitConfig> {
        let steps = self.steps.unwrap_or(d.steps);
        let warmup = self.warmup.unwrap_or(d.warmup);
        let batch = self.batch.unwrap_or(d.batch);
        anyhow::ensure!(
            steps > 0 && batch > 0,
            "--steps and --batch must be positive"
        );
        anyhow::ensure!(self.seq(d) >= 2, "--seq must be at least 2");
        let schedule = match self.schedule.as_str() {
            "constant" => Schedule::ConstantWithWarmup { warmup },
            "linear" => Schedule::Linear {
                warmup,
                total: steps,
            },
            _ => Schedule::Cosine {
                warmup,
                total: steps,
                min_ratio: 0.0,
            },
        };
        Ok(FitConfig {
            steps,
            batch_size: batch,
            grad_accum: self.grad_accum,
            lr: self.lr.unwrap_or(d.lr),
            schedule,
            optimizer: match self.optimizer.as_str() {
                "sgd" => OptimizerKind::Sgd {
                    momentum: self.momentum,
                },
                _ => OptimizerKind::AdamW {
                    weight_decay: self.weight_decay,
                },
            },
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            prox_mu: 0.0,
            checkpoint: self.checkpoint,
            seed,
            freeze_lora_a: false,
        })
    }
}
