//! `fedtune bench train`: LoRA training throughput on random token sequences, as a device
//! would train: frozen (quantized) base, AdamW, batches of equal-length sequences.

use std::time::Instant;

use fedtune_llm::backprop::{BaseView, Example, FitConfig, TrainError, fit};
use fedtune_llm::llama::LlamaModel;
use fedtune_llm::llama::random::SplitMix64;
use fedtune_llm::lora::{LoraAdapter, LoraConfig};

/// One timed measurement.
#[derive(Debug, Clone, Copy)]
pub struct TrainRun {
    /// Tokens trained per second (every token of every sequence).
    pub tok_s: f64,
    pub mean_loss: f64,
}

/// What to train on and how.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Micro-batches per step.
    pub grad_accum: usize,
    /// Timed steps.
    pub steps: u64,
    pub checkpoint: bool,
}

/// Trains a fresh adapter of `lora` for `shape.steps` steps of `shape.batch` random sequences
/// of `shape.seq` tokens, after one untimed warm-up step.
pub fn run(model: &LlamaModel, lora: LoraConfig, shape: &Shape) -> Result<TrainRun, TrainError> {
    let Shape {
        seq,
        batch,
        grad_accum,
        steps,
        checkpoint,
    } = *shape;
    let mut rng = SplitMix64::new(42);
    let examples: Vec<Example> = (0..batch * (steps as usize + 1))
        .map(|_| Example {
            tokens: (0..seq)
                .map(|_| (rng.next_u64() % model.cfg.n_vocab as u64) as u32)
                .collect(),
            mask: None,
        })
        .collect();
    let base = BaseView::of_model(model);
    let mut adapter = LoraAdapter::new(lora, &model.cfg)?;
    let cfg = |steps| FitConfig {
        steps,
        batch_size: batch,
        lr: 1e-4,
        grad_accum,
        checkpoint,
        ..FitConfig::default()
    };
    fit(&base, &mut adapter, &examples[..batch], &cfg(1), |_| {})?;
    let started = Instant::now();
    let summary = fit(&base, &mut adapter, &examples[batch..], &cfg(steps), |_| {})?;
    Ok(TrainRun {
        tok_s: summary.tokens as f64 / started.elapsed().as_secs_f64(),
        mean_loss: summary.mean_loss,
    })
}
