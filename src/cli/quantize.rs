//! `fedtune quantize`: re-quantize a model's weight matrices, as llama.cpp's llama-quantize.

use std::path::{Path, PathBuf};

use anyhow::Context;
use fedtune_llm::gguf::GgufFile;
use fedtune_llm::llama::requantize;
use fedtune_llm::quant::GgmlType;
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
    let bar = tensor_bar(file.tensors().len())?;
    let writer = requantize(&file, ty, |i, _, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })?;
    bar.finish_and_clear();
    writer.write_file(&a.output)?;
    report_sizes(&a.input, &a.output, &ty.to_string());
    Ok(())
}

/// A progress bar over a model's tensors.
pub(super) fn tensor_bar(n: usize) -> anyhow::Result<ProgressBar> {
    Ok(
        ProgressBar::new(n as u64).with_style(ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tensors {msg}",
        )?),
    )
}

/// `IN (size) -> OUT (size, what)` on stderr.
pub(super) fn report_sizes(input: &Path, output: &Path, what: &str) {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0)
    };
    eprintln!(
        "{} ({:.1} MB) -> {} ({:.1} MB, {what})",
        input.display(),
        size(input),
        output.display(),
        size(output)
    );
}
