//! `fedtune generate`: sample a continuation of a prompt, streamed to stdout.

use std::io::Write;

use fedtune_llm::llama::{Sampler, SamplerConfig};

use super::infer::{CacheType, ModelArgs, flush_utf8};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (special-token text such as `<|im_start|>` is parsed).
    #[arg(short = 'p', long)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long, default_value_t = 64)]
    n_predict: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling: keep tokens up to this cumulative probability.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep only the last W positions in the KV cache (bounded memory for long generations).
    #[arg(long)]
    window: Option<usize>,
    /// How the KV cache stores keys and values.
    #[arg(long, value_enum, default_value = "f16")]
    cache_type: CacheType,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.top_p),
        "--top-p must be within 0..=1"
    );
    anyhow::ensure!(
        a.temp.is_finite() && a.temp >= 0.0,
        "--temp {} must be a number ≥ 0 (0 is greedy)",
        a.temp
    );
    let (model, tok) = a.model.load_with_tokenizer()?;
    let prompt = tok.encode(&a.prompt, true, true)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt has no tokens");
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    });
    let stop: Vec<u32> = if a.ignore_eos {
        Vec::new()
    } else {
        tok.eos().into_iter().collect()
    };
    let mut cache = model.new_cache_of(a.window, a.cache_type.into());
    let mut out = std::io::stdout();
    let mut pending = Vec::new();
    let mut failed = None;
    let stats = a.model.run(|| {
        model.generate(&mut cache, &prompt, a.n_predict, &mut sampler, &stop, |t| {
            let step = tok
                .token_bytes(t)
                .map_err(anyhow::Error::from)
                .and_then(|b| {
                    pending.extend(b);
                    flush_utf8(&mut pending, &mut out).map_err(Into::into)
                });
            match step {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
    })??;
    if let Some(e) = failed {
        return Err(e);
    }
    let mut out = out.lock();
    out.write_all(&pending)?;
    writeln!(out)?;
    eprintln!(
        "prompt: {} tokens at {:.1} tok/s; generated: {} tokens at {:.1} tok/s; KV cache {:.1} MiB",
        stats.prompt_tokens,
        stats.prompt_tok_s(),
        stats.generated,
        stats.generate_tok_s(),
        cache.memory_bytes() as f64 / (1 << 20) as f64
    );
    Ok(())
}
