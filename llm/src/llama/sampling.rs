//! Choosing the next token from logits: greedy, or temperature with top-k and top-p, seeded.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// 0 (or less) picks the most likely token.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
        }
    }
}

#[derive(Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        }
    }

    /// The next token: top-k, then softmax at the temperature, then top-p, then a draw.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature <= 0.0 || self.cfg.top_k == 1 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.cfg.top_k > 0 {
            cand.truncate(self.cfg.top_k);
        }
        let max = cand[0].1;
        let mut total = 0.0f64;
        for c in cand.iter_mut() {
            c.1 = ((c.1 - max) / self.cfg.temperature).exp();
            total += f64::from(c.1);
        }
        let mut kept = 0.0f64;
        let mut keep = cand.len();
        for (i, c) in cand.iter().enumerate() {
            kept += f64::from(c.1) / total;
            if kept >= f64::from(self.cfg.top_p) {
                keep = i + 1;
                break;
            }
        }
        cand.truncate(keep);
        let mass: f64 = cand.iter().map(|c| f64::from(c.1)).sum();
        let mut r = self.rng.random::<f64>() * mass;
        for &(id, w) in &cand {
            r -= f64::from(w);
            if r <= 0.0 {
                return id;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// The index of the largest logit (the first, on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_bounds_the_choices() {
        let logits = [1.0, 5.0, 4.9, 4.8, -3.0];
        let sampler = |top_k| {
            Sampler::new(SamplerConfig {
                temperature: 1.0,
                top_k,
                top_p: 1.0,
                seed: 7,
            })
        };
        // top_k = 1 at temperature 1 draws the argmax every time, as greedy decoding does.
        let mut s = sampler(1);
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 1);
        }
        // top_k = 2 draws only the two largest, and both of them.
        let mut s = sampler(2);
        let draws: Vec<u32> = (0..200).map(|_| s.sample(&logits)).collect();
        assert!(draws.iter().all(|d| matches!(d, 1 | 2)), "{draws:?}");
        assert!(draws.contains(&1) && draws.contains(&2), "{draws:?}");
    }

    #[test]
    fn same_seed_same_draws_and_top_p_cuts_the_tail() {
        let logits: Vec<f32> = (0..50).map(|i| -(i as f32) * 0.3).collect();
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            seed: 3,
        };
        let a: Vec<u32> = (0..100)
            .scan(Sampler::new(cfg), |s, _| Some(s.sample(&logits)))
            .collect();
        let b: Vec<u32> = (0..100)
            .scan(Sampler::new(cfg), |s, _| Some(s.sample(&logits)))
            .collect();
        assert_eq!(a, b);
        // p(0) ≈ 0.26, p(1) ≈ 0.19, p(2) ≈ 0.14: the 50% nucleus is tokens 0..=2.
        assert!(a.iter().all(|&t| t <= 2), "{a:?}");
        assert!(a.contains(&0) && a.contains(&2));
    }
}
