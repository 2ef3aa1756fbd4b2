//! `fedtune bench infer`: prompt processing and generation speed, as llama-bench measures them
//! (a batch of prompt tokens; then tokens generated one forward pass each).

use std::time::Instant;

use fedtune_llm::llama::random::SplitMix64;
use fedtune_llm::llama::{KvType, LlamaError, LlamaModel, Logits, argmax};

/// One repetition's throughput.
#[derive(Debug, Clone, Copy)]
pub struct InferSpeed {
    pub pp_tok_s: f64,
    pub tg_tok_s: f64,
}

/// Runs `reps` repetitions of: `prompt` random tokens in one batch (timed as prompt
/// processing), then `gen` greedy tokens (timed as generation), each in a fresh cache of `kv`.
pub fn run(
    model: &LlamaModel,
    kv: KvType,
    prompt: usize,
    generate: usize,
    reps: usize,
    seed: u64,
) -> Result<Vec<InferSpeed>, LlamaError> {
    let mut rng = SplitMix64::new(seed);
    let tokens: Vec<u32> = (0..prompt)
        .map(|_| (rng.next_u64() % model.cfg.n_vocab as u64) as u32)
        .collect();
    // Warm-up: page the weights in and start the pool's threads.
    let mut cache = model.new_cache_of(None, kv);
    model.forward(&mut cache, &tokens[..prompt.min(8)], Logits::Last)?;
    (0..reps)
        .map(|_| {
            let mut cache = model.new_cache_of(None, kv);
            let t = Instant::now();
            let mut logits = model.forward(&mut cache, &tokens, Logits::Last)?;
            let pp = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..generate {
                logits = model.forward(&mut cache, &[argmax(&logits)], Logits::Last)?;
            }
            let tg = t.elapsed().as_secs_f64();
            Ok(InferSpeed {
                pp_tok_s: prompt as f64 / pp,
                tg_tok_s: generate as f64 / tg,
            })
        })
        .collect()
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
