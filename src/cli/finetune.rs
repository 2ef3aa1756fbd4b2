//! `fedtune finetune`: train a LoRA adapter on a text or JSONL file, base model frozen.

use std::path::PathBuf;

use anyhow::Context;
use fedtune::text_data::{Where, load_texts_where};
use fedtune_llm::backprop::{BaseView, evaluate, fit, windows};
use fedtune_llm::lora::LoraAdapter;
use indicatif::{ProgressBar, ProgressStyle};

use super::infer::ModelArgs;
use super::lora_args::{LoraArgs, save_adapter};
use super::train_args::{TrainArgs, TrainDefaults};

#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Training data: plain text, or JSON Lines with one record per line.
    #[arg(long)]
    data: PathBuf,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Keep only JSONL records with this field value (repeatable): `--where speaker=HAMLET`.
    #[arg(long = "where", value_name = "KEY=VALUE")]
    filters: Vec<Where>,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    train: TrainArgs,
    /// Fraction of the texts (the last ones) held out to measure perplexity before and after.
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// Output: a PEFT directory, or a GGUF LoRA file if it ends in .gguf.
    #[arg(long)]
    out: PathBuf,
}

/// What `finetune` trains with when a flag is not given.
const DEFAULTS: TrainDefaults = TrainDefaults {
    steps: 100,
    batch: 4,
    seq: 64,
    lr: 1e-3,
    warmup: 0,
};

pub fn run(a: FinetuneArgs) -> anyhow::Result<()> {
    let cfg = a.train.fit_config(DEFAULTS, a.lora.seed)?;
    anyhow::ensure!(
        (0.0..1.0).contains(&a.holdout),
        "--holdout must be in [0, 1)"
    );
    // Training reads the stored blocks (dequantized tiles), not interleaved copies.
    let model = a.model.load()?;
    let tok = a.model.tokenizer(&model)?;
    let data = load_texts_where(&a.data, &a.text_field, &a.filters)?;
    let n_eval = (data.texts.len() as f64 * a.holdout).round() as usize;
    let n_train = data.texts.len() - n_eval;
    anyhow::ensure!(
        n_train > 0,
        "no training texts left after holding out {n_eval}"
    );
    let encode = |texts: &[String]| -> anyhow::Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| Ok(tok.encode(t, true, false)?))
            .collect()
    };
    let train = windows(&encode(&data.texts[..n_train])?, a.train.seq(DEFAULTS));
    let eval = windows(&encode(&data.texts[n_train..])?, a.train.seq(DEFAULTS));
    anyhow::ensure!(
        !train.is_empty(),
        "{}: no training text has 2 tokens or more",
        a.data.display()
    );
    let mut adapter = LoraAdapter::new(a.lora.config()?, &model.cfg)?;
    eprintln!(
        "{} texts ({} skipped records): {} training sequences, {} held out; adapter of {} parameters",
        data.texts.len(),
        data.skipped,
        train.len(),
        eval.len(),
        adapter.n_params()
    );
    let base = BaseView::of_model(&model);
    let held_out = |adapter: Option<&LoraAdapter>| -> anyhow::Result<Option<f64>> {
        if eval.is_empty() {
            return Ok(None);
        }
        let (loss, _) = a
            .model
            .run(|| evaluate(&base, adapter, &eval, cfg.batch_size))??;
        Ok(Some(loss.exp()))
    };
    let before = held_out(None)?;
    let bar = ProgressBar::new(cfg.steps).with_style(ProgressStyle::with_template(
        "{bar:40} step {pos}/{len} loss {msg} [{elapsed}<{eta}]",
    )?);
    let started = std::time::Instant::now();
    let summary = a.model.run(|| {
        fit(&base, &mut adapter, &train, &cfg, |r| {
            bar.set_position(r.step + 1);
            bar.set_message(format!("{:.4} (lr {:.2e})", r.loss, r.lr));
        })
    })??;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    save_adapter(&adapter, &model.cfg, &a.out, &a.model.model)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let after = held_out(Some(&adapter))?;
    let fmt = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{p:.3}"));
    println!(
        "steps={} train_loss={:.4} train_tokens={} train_tok_s={:.1} heldout_ppl_before={} heldout_ppl_after={} adapter={}",
        summary.steps,
        summary.mean_loss,
        summary.tokens,
        summary.tokens as f64 / secs,
        fmt(before),
        fmt(after),
        a.out.display()
    );
    Ok(())
}
