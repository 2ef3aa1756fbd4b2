//! `fedtune export`: an adapter in the other format (PEFT directory ↔ GGUF LoRA file).

use std::path::PathBuf;

use anyhow::Context;
use fedtune::base_model::BaseModel;
use fedtune_llm::lora;

use super::lora_args::save_adapter_as;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The adapter: a PEFT directory or a GGUF LoRA file.
    #[arg(long)]
    adapter: PathBuf,
    /// Format to write: `gguf` (llama.cpp's --lora) or `peft` (Hugging Face PEFT directory).
    #[arg(long, value_parser = ["gguf", "peft"])]
    format: String,
    /// Output: a .gguf file, or a directory for `peft`.
    #[arg(long)]
    out: PathBuf,
    /// The base model the adapter belongs to (`embedded`, `smollm2`, `gemma3` or a GGUF file)
    /// [default: the one recorded in the adapter].
    #[arg(short = 'm', long)]
    model: Option<BaseModel>,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let base = base_model(a.model.as_ref(), &a.adapter)?;
    let model = base.open()?;
    let adapter = lora::load(&a.adapter, &model.cfg)
        .with_context(|| format!("loading the adapter {}", a.adapter.display()))?;
    save_adapter_as(&adapter, &model.cfg, &a.out, &base, a.format == "gguf")?;
    eprintln!(
        "wrote {} ({} format: rank {}, alpha {}, {} modules)",
        a.out.display(),
        a.format,
        adapter.config.rank,
        adapter.config.alpha,
        adapter.modules.len()
    );
    Ok(())
}

/// `--model`, else the base recorded in the adapter.
pub(super) fn base_model(
    model: Option<&BaseModel>,
    adapter: &std::path::Path,
) -> anyhow::Result<BaseModel> {
    match model {
        Some(m) => Ok(m.clone()),
        None => {
            let recorded = lora::recorded_base(adapter).with_context(|| {
                format!(
                    "{} does not record its base model: pass --model",
                    adapter.display()
                )
            })?;
            Ok(recorded.parse().unwrap_or(BaseModel::Embedded))
        }
    }
}
