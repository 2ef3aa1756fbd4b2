//! `fedtune merge`: base model + adapter → one GGUF model, optionally re-quantized.

use std::path::PathBuf;

use anyhow::Context;
use fedtune::base_model::BaseModel;
use fedtune_llm::lora::{self, merge};
use fedtune_llm::quant::GgmlType;

use super::quantize::{report_sizes, tensor_bar};

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Base model: `embedded`, `smollm2`, `gemma3` or a GGUF file.
    #[arg(short = 'm', long, default_value = "embedded")]
    model: BaseModel,
    /// The adapter: a PEFT directory or a GGUF LoRA file.
    #[arg(long)]
    adapter: PathBuf,
    /// Output GGUF model.
    #[arg(long)]
    out: PathBuf,
    /// Format of every weight matrix in the output [default: each matrix keeps its format].
    #[arg(long = "type", value_parser = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16", "bf16", "f32"])]
    ty: Option<String>,
}

pub fn run(a: MergeArgs) -> anyhow::Result<()> {
    let ty =
        a.ty.as_deref()
            .map(|t| GgmlType::from_name(t).with_context(|| format!("unknown type {t}")))
            .transpose()?;
    let model = a.model.open()?;
    let adapter = lora::load(&a.adapter, &model.cfg)
        .with_context(|| format!("loading the adapter {}", a.adapter.display()))?;
    let bar = tensor_bar(model.file().tensors().len())?;
    let writer = merge::merge(&model, &adapter, ty, |i, _, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })?;
    bar.finish_and_clear();
    writer.write_file(&a.out)?;
    let what = format!(
        "merged rank-{} adapter{}",
        adapter.config.rank,
        ty.map(|t| format!(", {t}")).unwrap_or_default()
    );
    let input = a
        .model
        .path()
        .unwrap_or_else(|| PathBuf::from(a.model.to_string()));
    report_sizes(&input, &a.out, &what);
    Ok(())
}
