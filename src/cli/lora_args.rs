//! The LoRA hyper-parameter flags that `finetune` and `bench random-adapter` share.

use std::path::Path;

use fedtune::base_model::BaseModel;
use fedtune_llm::llama::{LlamaConfig, Proj};
use fedtune_llm::lora::{LoraAdapter, LoraConfig, gguf_adapter, peft};

#[derive(Debug, clap::Args, Clone)]
pub struct LoraArgs {
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / r).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// Projections to adapt, comma-separated: q,k,v,o,gate,up,down (or `all`).
    #[arg(long, default_value = "q,k,v,o")]
    pub targets: String,
    /// Dropout on the LoRA input while training.
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f32,
    /// Seeds the adapter's initialisation (and dropout, data order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl LoraArgs {
    pub fn config(&self) -> anyhow::Result<LoraConfig> {
        Ok(LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.lora_dropout,
            targets: parse_targets(&self.targets)?,
            seed: self.seed,
        })
    }
}

/// `q,k,v,o` → projections; `all` is every one.
pub fn parse_targets(s: &str) -> anyhow::Result<Vec<Proj>> {
    fedtune::job::config::parse_targets(s).map_err(anyhow::Error::msg)
}

/// Writes `adapter` to `out`: a GGUF LoRA file if `out` ends in `.gguf`, else a PEFT
/// directory. `base` is recorded as the adapter's base model.
pub fn save_adapter(
    adapter: &LoraAdapter,
    cfg: &LlamaConfig,
    out: &Path,
    base: &BaseModel,
) -> anyhow::Result<()> {
    let gguf = out.extension().is_some_and(|e| e == "gguf");
    save_adapter_as(adapter, cfg, out, base, gguf)
}

/// Writes `adapter` to `out` as a GGUF LoRA file (`gguf`) or a PEFT directory, recording
/// `base` (a file made absolute) as its base model.
pub fn save_adapter_as(
    adapter: &LoraAdapter,
    cfg: &LlamaConfig,
    out: &Path,
    base: &BaseModel,
    gguf: bool,
) -> anyhow::Result<()> {
    let base = match base {
        BaseModel::File(p) => std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .to_string_lossy()
            .into_owned(),
        other => other.to_string(),
    };
    if gguf {
        gguf_adapter::save(adapter, cfg, out, Some(&base))?;
    } else {
        peft::save(adapter, cfg, out, Some(&base))?;
    }
    Ok(())
}
