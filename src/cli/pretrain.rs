//! `fedtune pretrain`: a small llama trained from scratch, every weight, with a byte-level BPE
//! vocabulary learnt from the same text; written as one GGUF model (tokenizer included) that
//! fedtune and llama.cpp load. With no `--data` it trains on the embedded Shakespeare plays
//! that no simulated client owns: this is how the embedded default base model is made.

use std::path::PathBuf;

use anyhow::Context;
use fedtune::shakespeare;
use fedtune::text_data::{Texts, Where, load_texts_where, parse_jsonl};
use fedtune_llm::backprop::{BaseView, evaluate, fit_full, windows};
use fedtune_llm::backprop::{init_params, to_gguf};
use fedtune_llm::llama::LlamaModel;
use fedtune_llm::llama::random::RandomShape;
use fedtune_llm::quant::GgmlType;
use fedtune_llm::tokenizer::{Tokenizer, train_bpe};
use indicatif::{ProgressBar, ProgressStyle};

use super::train_args::{TrainArgs, TrainDefaults};

#[derive(Debug, clap::Args)]
pub struct PretrainArgs {
    /// Training text: plain text, or JSON Lines [default: the embedded Shakespeare plays kept
    /// for pretraining, which no simulated client owns].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Keep only JSONL records with this field value; repeat a key for alternatives:
    /// `--where play=hamlet --where play=othello`.
    #[arg(long = "where", value_name = "KEY=VALUE")]
    filters: Vec<Where>,
    /// Tokens in the BPE vocabulary learnt from the data (256 bytes, merges, <|endoftext|>).
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    /// Model width.
    #[arg(long, default_value_t = 256)]
    dim: usize,
    #[arg(long, default_value_t = 6)]
    layers: usize,
    /// Attention heads (dim / heads per head).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Key/value heads (grouped-query attention; divides --heads).
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Feed-forward (SwiGLU) width.
    #[arg(long, default_value_t = 768)]
    ffn: usize,
    /// Context length recorded in the file.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// A separate output head instead of the embedding matrix (tied by default).
    #[arg(long)]
    untied: bool,
    #[command(flatten)]
    train: TrainArgs,
    /// Seeds the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Every n-th text is held out to measure perplexity (0: none).
    #[arg(long, default_value_t = 20)]
    holdout_every: usize,
    /// Storage of the weight matrices in the written file (norms stay f32).
    #[arg(long = "type", default_value = "q8_0", value_parser = ["q4_0", "q4_1", "q8_0", "f16", "f32"])]
    ty: String,
    /// CPU threads [default: all cores].
    #[arg(short = 't', long, value_parser = super::parse_threads)]
    threads: Option<usize>,
    /// The GGUF model file to write.
    #[arg(long)]
    out: PathBuf,
}

/// What `pretrain` trains with when a flag is not given.
const DEFAULTS: TrainDefaults = TrainDefaults {
    steps: 3000,
    batch: 16,
    seq: 128,
    lr: 3e-3,
    warmup: 100,
};

impl PretrainArgs {
    fn shape(&self) -> anyhow::Result<RandomShape> {
        anyhow::ensure!(
            self.heads > 0
                && self.dim.is_multiple_of(self.heads)
                && (self.dim / self.heads).is_multiple_of(2),
            "--dim {} must split into --heads {} heads of an even size",
            self.dim,
            self.heads
        );
        anyhow::ensure!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "--kv-heads {} must divide --heads {}",
            self.kv_heads,
            self.heads
        );
        anyhow::ensure!(
            self.layers > 0 && self.ffn > 0,
            "--layers and --ffn must be positive"
        );
        Ok(RandomShape {
            dim: self.dim,
            heads: self.heads,
            kv_heads: self.kv_heads,
            ffn: self.ffn,
            layers: self.layers,
            vocab: self.vocab,
            tied: !self.untied,
            gemma3: None,
        })
    }

    fn texts(&self) -> anyhow::Result<Texts> {
        match &self.data {
            Some(path) => Ok(load_texts_where(path, &self.text_field, &self.filters)?),
            None => {
                let filters = if self.filters.is_empty() {
                    shakespeare::pretrain_filters()
                } else {
                    self.filters.clone()
                };
                let bytes = shakespeare::jsonl().context("reading the embedded plays")?;
                Ok(parse_jsonl(&bytes, &self.text_field, &filters))
            }
        }
    }
}

pub fn run(a: PretrainArgs) -> anyhow::Result<()> {
    let ty = GgmlType::from_name(&a.ty).with_context(|| format!("unknown type {}", a.ty))?;
    let shape = a.shape()?;
    let fit_cfg = a.train.fit_config(DEFAULTS, a.seed)?;
    let seq = a.train.seq(DEFAULTS);
    anyhow::ensure!(
        seq <= a.context,
        "--seq {seq} exceeds --context {}",
        a.context
    );
    let data = a.texts()?;
    anyhow::ensure!(
        !data.texts.is_empty(),
        "no usable text ({} records skipped)",
        data.skipped
    );
    let (train_texts, eval_texts) = split_held_out(&data.texts, a.holdout_every);

    let threads = a.threads.unwrap_or_else(super::default_threads).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let started = std::time::Instant::now();
    let vocab = pool.install(|| train_bpe(train_texts.iter(), a.vocab))?;
    let tok = Tokenizer::from_spec(&vocab)?;
    let stream = |texts: &[&str]| -> anyhow::Result<Vec<u32>> {
        let mut ids = Vec::new();
        for t in texts {
            ids.extend(tok.encode(t, true, false)?);
        }
        Ok(ids)
    };
    let train_ids = stream(&train_texts)?;
    let train = windows(&[train_ids], seq);
    let eval = windows(&[stream(&eval_texts)?], seq);
    let cfg = fedtune_llm::llama::LlamaConfig {
        context_len: a.context,
        ..shape.config()
    };
    let mut params = init_params(&shape, a.seed);
    let n_params: usize = params.tensors().iter().map(|(_, t)| t.len()).sum();
    let n_tokens: usize = train.iter().map(|e| e.tokens.len()).sum();
    eprintln!(
        "{} texts ({} skipped records, {} held out); vocabulary of {} tokens learnt in {:.1}s; \
         {n_tokens} training tokens in {} sequences; model of {n_params} parameters",
        data.texts.len(),
        data.skipped,
        eval_texts.len(),
        vocab.tokens.len(),
        started.elapsed().as_secs_f64(),
        train.len(),
    );

    let fit_started = std::time::Instant::now();
    let summary = pool.install(|| train_with_bar(&cfg, &mut params, &train, &fit_cfg))?;
    let fit_secs = fit_started.elapsed().as_secs_f64();

    let name = a
        .out
        .file_stem()
        .map_or("fedtune-pretrained".into(), |s| s.to_string_lossy());
    to_gguf(&cfg, &params, &vocab, ty, &name)?
        .write_file(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let heldout_ppl = |base: &BaseView| -> anyhow::Result<Option<f64>> {
        if eval.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            pool.install(|| evaluate(base, None, &eval, fit_cfg.batch_size))?
                .0
                .exp(),
        ))
    };
    let trained = heldout_ppl(&params.view(&cfg))?;
    let model = LlamaModel::open(&a.out)?;
    let stored = heldout_ppl(&BaseView::of_model(&model))?;
    let fmt = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{p:.3}"));
    let file_mb = std::fs::metadata(&a.out)?.len() as f64 / (1 << 20) as f64;
    // The trained f32 weights, then the stored ones (once, when they are f32 too).
    let mut ppl = format!("heldout_ppl_f32={}", fmt(trained));
    if a.ty != "f32" {
        ppl.push_str(&format!(" heldout_ppl_{}={}", a.ty, fmt(stored)));
    }
    println!(
        "steps={} params={n_params} train_loss={:.4} train_tok_s={:.1} {ppl} file_mb={file_mb:.2} out={}",
        summary.steps,
        summary.mean_loss,
        summary.tokens as f64 / fit_secs,
        a.out.display()
    );
    Ok(())
}

/// Every `every`-th text (none for 0) is held out of training, for the held-out perplexity.
fn split_held_out(texts: &[String], every: usize) -> (Vec<&str>, Vec<&str>) {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, t) in texts.iter().enumerate() {
        if every > 0 && i % every == every - 1 {
            held.push(t.as_str());
        } else {
            train.push(t.as_str());
        }
    }
    (train, held)
}

/// [`fit_full`] with a progress bar showing the step, loss and learning rate.
fn train_with_bar(
    cfg: &fedtune_llm::llama::LlamaConfig,
    params: &mut fedtune_llm::backprop::Params,
    train: &[fedtune_llm::backprop::Example],
    fit_cfg: &fedtune_llm::backprop::FitConfig,
) -> anyhow::Result<fedtune_llm::backprop::FitSummary> {
    let bar = ProgressBar::new(fit_cfg.steps).with_style(ProgressStyle::with_template(
        "{bar:40} step {pos}/{len} loss {msg} [{elapsed}<{eta}]",
    )?);
    let summary = fit_full(cfg, params, train, fit_cfg, |r| {
        bar.set_position(r.step + 1);
        bar.set_message(format!("{:.4} (lr {:.2e})", r.loss, r.lr));
    })?;
    bar.finish_and_clear();
    Ok(summary)
}
