//! `fedtune quantize`: re-quantize a model's weight matrices, as llama.cpp's llama-quantize.

use std::path::PathBuf;

use anyhow::Context;
use fedtune_client::gguf::GgufFile;
use fedtune_client::llama::requantize;
use fedtune_client::quant::GgmlType;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// Input GGUF model.
    input: PathBuf,
    /// Output GGUF model.
    output: PathBuf,
    /// Target format of the weight matrices (norms stay as they are).
    #[arg(long = "type", value_parser = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16", "bf16", "f32"])]
    ty: String,
}

pub fn run(a: QuantizeArgs) -> anyhow::Result<()> {
    let ty = GgmlType::from_name(&a.ty).with_context(|| format!("unknown type {}", a.ty))?;
    let file = GgufFile::open(&a.input)?;
    let bar = ProgressBar::new(file.tensors().len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}")?,
    );
    let writer = requantize(&file, ty, |i, _, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })?;
    bar.finish_and_clear();
    writer.write_file(&a.output)?;
    let size = |p: &PathBuf| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0)
    };
    eprintln!(
        "{} ({:.1} MB) -> {} ({:.1} MB, {ty})",
        a.input.display(),
        size(&a.input),
        a.output.display(),
        size(&a.output)
    );
    Ok(())
}
