//! `fedtune eval`: how well a model (and adapter) predicts a JSONL dataset's text, as one JSON
//! object on stdout.

use std::path::PathBuf;

use fedtune::task::Scores;
use fedtune::task::keyboard::{WordTable, score_text};
use fedtune::text_data::{RecordFields, load_records};
use indicatif::{ProgressBar, ProgressStyle};

use super::infer::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON Lines, one record per line.
    #[arg(long)]
    data: PathBuf,
    /// The field naming each record's client (user, device, speaking role).
    #[arg(long)]
    client_field: String,
    /// The field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// What to measure: `keyboard` (perplexity, next-word top-1/top-3 accuracy).
    #[arg(long, value_parser = ["keyboard"], default_value = "keyboard")]
    task: String,
    /// Tokens per scoring window; longer texts are scored window by window.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.ctx >= 2, "--ctx must be at least 2");
    let (model, tok) = a.model.load_with_tokenizer()?;
    let fields = RecordFields {
        client: a.client_field.clone(),
        text: a.text_field.clone(),
        reply: None,
    };
    let data = load_records(&a.data, &fields)?;
    let table = WordTable::new(&tok);
    let bar = ProgressBar::new(data.records.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} records, ppl {msg} [{elapsed}<{eta}]",
    )?);
    let mut stats = Scores::default();
    for r in &data.records {
        let s = a
            .model
            .run(|| score_text(&model, &tok, &table, &r.text, a.ctx))??;
        stats.add(&s);
        bar.inc(1);
        bar.set_message(format!("{:.3}", stats.perplexity()));
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        stats.n_tokens > 0,
        "no record long enough to score (each needs at least 2 tokens)"
    );
    let out = serde_json::json!({
        "task": a.task,
        "perplexity": stats.perplexity(),
        "loss": stats.loss(),
        "top1": stats.top1_accuracy(),
        "top3": stats.top3_accuracy(),
        "n_tokens": stats.n_tokens,
        "n_words": stats.n_items,
        "n_records": data.records.len(),
        "n_clients": data.n_clients(),
        "skipped_records": data.skipped,
    });
    println!("{out}");
    Ok(())
}
