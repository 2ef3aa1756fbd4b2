//! What a run will allocate, estimated from its settings before it starts: a run that cannot
//! fit is refused with the estimate instead of growing until the kernel kills it.

use fedtune_llm::llama::LlamaConfig;

use super::{JobConfig, JobError};
use crate::resources::{available_memory, human_bytes};

/// The memory a run needs beyond its base model (already loaded when this is asked), in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Trainable adapter parameters.
    pub adapter_params: u64,
    /// Adapter, gradients, optimizer moments and update of one device holding a model.
    pub per_device: u64,
    /// Activations kept for the backward pass of one device training.
    pub per_training: u64,
    /// Devices holding a model at once, and training at once.
    pub holding: u64,
    pub training: u64,
    pub total: u64,
}

impl MemoryEstimate {
    /// For a job on a base model of `model`.
    pub fn of(cfg: &JobConfig, model: &LlamaConfig, targets: &[fedtune_llm::llama::Proj]) -> Self {
        let r = cfg.rank as u64;
        let per_layer: u64 = targets
            .iter()
            .map(|&p| {
                let (out_dim, in_dim) = model.proj_shape(p);
                r * (out_dim + in_dim) as u64
            })
            .sum();
        let adapter_params = per_layer * model.n_layers as u64;
        let f32s = 4;
        // Adapter, gradients, two Adam moments, the update sent, and a spare copy.
        let per_device = 6 * adapter_params * f32s;
        let tokens = u64::from(cfg.batch_size) * cfg.seq as u64;
        let (d, kv, f) = (
            model.dim as u64,
            (model.n_kv_heads * model.head_dim) as u64,
            model.ffn_dim as u64,
        );
        // Per token and layer: the normed inputs, q/k/v, attention output, residual, gate/up/
        // act, the LoRA intermediates and a row of attention weights; then the logits and
        // their gradient.
        let per_token_layer =
            6 * d + 2 * kv + 3 * f + r * targets.len() as u64 + (model.n_heads * cfg.seq) as u64;
        let per_training = f32s
            * (tokens * per_token_layer * model.n_layers as u64
                + 2 * tokens * model.n_vocab as u64
                + 4 * tokens * d);
        let (threads, holding) = (cfg.threads() as u64, cfg.concurrency() as u64);
        let training = threads.min(holding);
        // The server's global model, aggregate and encoded copy.
        let server = 3 * adapter_params * f32s;
        let total = holding * per_device + training * per_training + server;
        MemoryEstimate {
            adapter_params,
            per_device,
            per_training,
            holding,
            training,
            total,
        }
    }

    /// Refuses the run, with the estimate and what to lower, when it exceeds `available`.
    pub fn check(&self, available: u64) -> Result<(), JobError> {
        if self.total <= available {
            return Ok(());
        }
        Err(JobError::Config(format!(
            "this run needs about {} ({} adapter parameters; {} per device × {} holding a model, \
             {} of activations × {} training at once) but the machine has {} available: lower \
             rank, batch_size, seq or concurrency",
            human_bytes(self.total),
            self.adapter_params,
            human_bytes(self.per_device),
            self.holding,
            human_bytes(self.per_training),
            self.training,
            human_bytes(available),
        )))
    }
}

/// Refuses a job that cannot fit this machine's available memory.
pub fn check_fits(cfg: &JobConfig, model: &LlamaConfig) -> Result<(), JobError> {
    let targets = super::config::parse_targets(&cfg.targets).map_err(JobError::Config)?;
    match available_memory() {
        Some(available) => MemoryEstimate::of(cfg, model, &targets).check(available),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_llm::llama::Proj;

    fn smollm2() -> LlamaConfig {
        LlamaConfig {
            arch: "llama".into(),
            n_layers: 30,
            dim: 576,
            ffn_dim: 1536,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            rope_dim: 64,
            rope_base: 100_000.0,
            rope_freq_scale: 1.0,
            rope_order: fedtune_llm::llama::RopeOrder::Normal,
            rms_eps: 1e-5,
            context_len: 8192,
            n_vocab: 49152,
            gemma3: None,
        }
    }

    /// The default job fits a small machine; a rank, batch or concurrency that cannot fit
    /// is refused with the estimate, before anything is allocated.
    #[test]
    fn runs_that_cannot_fit_are_refused_with_the_estimate() {
        let cfg = JobConfig {
            threads: 2,
            ..JobConfig::default()
        };
        let targets = [Proj::Q, Proj::V];
        let est = MemoryEstimate::of(&cfg, &smollm2(), &targets);
        // Rank 8 on q and v of 30 layers: 8·(576+576) + 8·(192+576) per layer.
        assert_eq!(est.adapter_params, 30 * (8 * 1152 + 8 * 768));
        assert_eq!((est.holding, est.training), (4, 2));
        est.check(2 << 30).unwrap();

        let huge = JobConfig {
            batch_size: 4096,
            seq: 4096,
            ..cfg.clone()
        };
        let e = MemoryEstimate::of(&huge, &smollm2(), &targets)
            .check(24 << 30)
            .unwrap_err()
            .to_string();
        assert!(e.contains("this run needs about"), "{e}");
        assert!(e.contains("but the machine has 24.0 GiB available"), "{e}");
        let crowd = JobConfig {
            concurrency: 1_000_000,
            ..cfg
        };
        assert!(
            MemoryEstimate::of(&crowd, &smollm2(), &targets)
                .check(24 << 30)
                .is_err()
        );
    }
}
