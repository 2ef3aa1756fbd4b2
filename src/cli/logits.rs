//! `fedtune logits`: the logits of every position, as a NumPy array.

use std::path::PathBuf;

use fedtune_llm::llama::Logits;

use super::infer::{ModelArgs, parse_tokens};

#[derive(Debug, clap::Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma-separated (e.g. from `fedtune tokenize`).
    #[arg(long)]
    tokens: String,
    /// Output file: float32 [n_tokens, n_vocab] in NumPy .npy format.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: LogitsArgs) -> anyhow::Result<()> {
    let tokens = parse_tokens(&a.tokens)?;
    anyhow::ensure!(!tokens.is_empty(), "--tokens is empty");
    let model = a.model.load_for_inference()?;
    let logits = a.model.run(|| {
        let mut cache = model.new_cache(None);
        model.forward(&mut cache, &tokens, Logits::All)
    })??;
    fedtune::npy::write_f32(&a.out, &[tokens.len(), model.cfg.n_vocab], &logits)?;
    eprintln!(
        "wrote {} × {} logits to {}",
        tokens.len(),
        model.cfg.n_vocab,
        a.out.display()
    );
    Ok(())
}
