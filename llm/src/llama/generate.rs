//! Text generation and scoring loops over the forward pass.

use std::time::{Duration, Instant};

use super::{KvCache, LlamaError, LlamaModel, Logits, Sampler};

/// Timings of one generation: prompt processing and token generation, separately.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated: usize,
    pub generate_time: Duration,
}

impl GenerateStats {
    pub fn prompt_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    pub fn generate_tok_s(&self) -> f64 {
        self.generated as f64 / self.generate_time.as_secs_f64().max(1e-9)
    }
}

impl LlamaModel {
    /// Processes `prompt` in one batch, then samples up to `max_new` tokens, one forward pass
    /// each. `on_token` sees every new token and returns `false` to stop; `stop` tokens (such
    /// as EOS) end generation without being passed on.
    pub fn generate(
        &self,
        cache: &mut KvCache,
        prompt: &[u32],
        max_new: usize,
        sampler: &mut Sampler,
        stop: &[u32],
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<GenerateStats, LlamaError> {
        let mut stats = GenerateStats {
            prompt_tokens: prompt.len(),
            ..Default::default()
        };
        let start = Instant::now();
        let mut logits = self.forward(cache, prompt, Logits::Last)?;
        stats.prompt_time = start.elapsed();
        let start = Instant::now();
        for i in 0..max_new {
            let next = sampler.sample(&logits);
            if stop.contains(&next) || !on_token(next) {
                break;
            }
            stats.generated += 1;
            if i + 1 < max_new {
                logits = self.forward(cache, &[next], Logits::Last)?;
            }
        }
        stats.generate_time = start.elapsed();
        Ok(stats)
    }

    /// Negative log-likelihood (nats) of each token after the first, given the ones before
    /// it, scoring from position `score_from` on. Runs in a fresh cache.
    pub fn token_nll(&self, tokens: &[u32], score_from: usize) -> Result<Vec<f64>, LlamaError> {
        if tokens.len() < 2 {
            return Ok(Vec::new());
        }
        let mut cache = self.new_cache(None);
        let logits = self.forward(&mut cache, &tokens[..tokens.len() - 1], Logits::All)?;
        let v = self.cfg.n_vocab;
        Ok(logits
            .chunks_exact(v)
            .zip(&tokens[1..])
            .enumerate()
            .filter(|(i, _)| i + 1 >= score_from)
            .map(|(_, (row, &next))| nll(row, next as usize))
            .collect())
    }
}

/// −log softmax(row)[target], computed stably in f64.
pub fn nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| f64::from(l - max).exp()).sum();
    sum.ln() - f64::from(row[target] - max)
}
