//! `fedtune perplexity`: how well a model predicts a text file or a JSONL dataset.

use fedtune::text_data::load_texts;
use indicatif::{ProgressBar, ProgressStyle};

use super::infer::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Plain text, or JSON Lines with one record per line.
    #[arg(long)]
    data: std::path::PathBuf,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Tokens per evaluation window; longer texts are scored window by window.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
}

pub fn run(a: PerplexityArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.ctx >= 2, "--ctx must be at least 2");
    let (model, tok) = a.model.load_with_tokenizer()?;
    let data = load_texts(&a.data, &a.text_field)?;
    let bar = ProgressBar::new(data.texts.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} texts, ppl {msg} [{elapsed}<{eta}]",
    )?);
    let (mut nll, mut n) = (0.0f64, 0usize);
    for text in &data.texts {
        let ids = tok.encode(text, true, false)?;
        for window in ids.chunks(a.ctx) {
            let scores = a.model.run(|| model.token_nll(window, 0))??;
            nll += scores.iter().sum::<f64>();
            n += scores.len();
        }
        bar.inc(1);
        if n > 0 {
            bar.set_message(format!("{:.3}", (nll / n as f64).exp()));
        }
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        n > 0,
        "no text long enough to score (each needs at least 2 tokens)"
    );
    println!(
        "perplexity={:.4} nll={:.5} n_tokens={} n_texts={} skipped_records={}",
        (nll / n as f64).exp(),
        nll / n as f64,
        n,
        data.texts.len(),
        data.skipped
    );
    Ok(())
}
