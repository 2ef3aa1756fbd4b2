//! The LoRA hyper-parameter flags that `finetune` and `bench random-adapter` share.

use std::path::Path;

use anyhow::Context;
use fedtune_client::llama::{LlamaConfig, Proj};
use fedtune_client::lora::{LoraAdapter, LoraConfig, gguf_adapter, peft};

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
    if s.trim() == "all" {
        return Ok(Proj::ALL.to_vec());
    }
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            Proj::parse(t).with_context(|| {
                format!("`{t}` is not a projection: use q, k, v, o, gate, up, down or all")
            })
        })
        .collect()
}

/// Writes `adapter` to `out`: a GGUF LoRA file if `out` ends in `.gguf`, else a PEFT
/// directory. `base` is recorded as the adapter's base model.
pub fn save_adapter(
    adapter: &LoraAdapter,
    cfg: &LlamaConfig,
    out: &Path,
    base: &Path,
) -> anyhow::Result<()> {
    let gguf = out.extension().is_some_and(|e| e == "gguf");
    save_adapter_as(adapter, cfg, out, base, gguf)
}

/// Writes `adapter` to `out` as a GGUF LoRA file (`gguf`) or a PEFT directory, recording
/// `base` (made absolute) as its base model.
pub fn save_adapter_as(
    adapter: &LoraAdapter,
    cfg: &LlamaConfig,
    out: &Path,
    base: &Path,
    gguf: bool,
) -> anyhow::Result<()> {
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let base = base.to_string_lossy();
    if gguf {
        gguf_adapter::save(adapter, cfg, out, Some(&base))?;
    } else {
        peft::save(adapter, cfg, out, Some(&base))?;
    }
    Ok(())
}
