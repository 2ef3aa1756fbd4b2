//! The adapter (Hu et al. 2021): for each targeted projection `y = x·Wᵀ` of the frozen base,
//! a trainable low-rank update `y += scale · (dropout(x)·Aᵀ)·Bᵀ` with A `[rank × in]`,
//! B `[out × rank]` and `scale = alpha / rank`, initialised as PEFT does (A Kaiming-uniform,
//! B zero, so a fresh adapter leaves the model unchanged).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::InvalidAdapter;
use crate::llama::random::SplitMix64;
use crate::llama::{LlamaConfig, Proj};

/// The hyper-parameters of an adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// r: the rank of each update.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f32,
    /// Dropout probability on the LoRA input during training (0 disables it).
    pub dropout: f32,
    /// The projections of every block that get an adapter.
    pub targets: Vec<Proj>,
    /// Seeds A's initialisation (and, mixed with the step, dropout).
    pub seed: u64,
}

impl LoraConfig {
    /// Rank `rank`, `alpha = 2·rank`, no dropout, on `targets`, seed 0.
    pub fn new(rank: usize, targets: &[Proj]) -> Self {
        Self {
            rank,
            alpha: 2.0 * rank as f32,
            dropout: 0.0,
            targets: targets.to_vec(),
            seed: 0,
        }
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// Checks the hyper-parameters on their own (see [`LoraAdapter::validate`] for the fit to
    /// a base model).
    pub fn validate(&self) -> Result<(), InvalidAdapter> {
        if self.rank == 0 {
            return Err(InvalidAdapter::ZeroRank);
        }
        if self.targets.is_empty() {
            return Err(InvalidAdapter::NoTargets);
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(InvalidAdapter::BadAlpha(self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(InvalidAdapter::BadDropout(self.dropout));
        }
        Ok(())
    }

    /// The targets in canonical order ([`Proj::ALL`]'s), without repeats.
    pub fn canonical_targets(&self) -> Vec<Proj> {
        Proj::ALL
            .into_iter()
            .filter(|p| self.targets.contains(p))
            .collect()
    }
}

/// The adapter of one projection (or, in [`super::Grads`], its gradients).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModule {
    pub layer: usize,
    pub proj: Proj,
    pub rank: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    /// `[rank × in_dim]`, row-major.
    pub a: Vec<f32>,
    /// `[out_dim × rank]`, row-major.
    pub b: Vec<f32>,
}

impl LoraModule {
    /// llama.cpp's name of the adapted weight (`blk.{layer}.attn_q.weight`); its tensors are
    /// this name + `.lora_a` / `.lora_b`.
    pub fn name(&self) -> String {
        format!("blk.{}.{}.weight", self.layer, self.proj.gguf_name())
    }

    /// The same shape, all zeros.
    pub fn zeros_like(&self) -> Self {
        Self {
            a: vec![0.0; self.a.len()],
            b: vec![0.0; self.b.len()],
            ..self.clone()
        }
    }
}

/// A LoRA adapter over every targeted projection of every block.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    /// By layer, then in [`Proj::ALL`] order.
    pub modules: Vec<LoraModule>,
}

/// The rank fits every targeted projection: at most its smaller dimension.
fn check_rank(config: &LoraConfig, cfg: &LlamaConfig) -> Result<(), InvalidAdapter> {
    for proj in config.canonical_targets() {
        let (out_dim, in_dim) = cfg.proj_shape(proj);
        let max = out_dim.min(in_dim);
        if config.rank > max {
            return Err(InvalidAdapter::RankTooLarge {
                rank: config.rank,
                proj,
                max,
            });
        }
    }
    Ok(())
}

impl LoraAdapter {
    /// A fresh adapter for a model of `cfg`: A Kaiming-uniform as PEFT
    /// (`kaiming_uniform_(a=√5)`: uniform in ±1/√in), B zero, from a ChaCha8 stream seeded
    /// with `config.seed` (modules in [`Self::modules`] order).
    pub fn new(config: LoraConfig, cfg: &LlamaConfig) -> Result<Self, InvalidAdapter> {
        config.validate()?;
        check_rank(&config, cfg)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let r = config.rank;
        let mut modules = Vec::new();
        for layer in 0..cfg.n_layers {
            for proj in config.canonical_targets() {
                let (out_dim, in_dim) = cfg.proj_shape(proj);
                let bound = 1.0 / (in_dim as f32).sqrt();
                let a = (0..r * in_dim)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                modules.push(LoraModule {
                    layer,
                    proj,
                    rank: r,
                    in_dim,
                    out_dim,
                    a,
                    b: vec![0.0; out_dim * r],
                });
            }
        }
        Ok(Self { config, modules })
    }

    /// An adapter with random A and B (B uniform in ±`b_scale`, A in ±1/√in), from a
    /// splitmix64 stream seeded with `config.seed`, module by module, A before B: the same
    /// values as `scripts/reference/golden_lora.py`, for tests and benchmarks that need an
    /// adapter that changes the model.
    pub fn random(
        config: LoraConfig,
        cfg: &LlamaConfig,
        b_scale: f32,
    ) -> Result<Self, InvalidAdapter> {
        let mut adapter = Self::new(config, cfg)?;
        let mut rng = SplitMix64::new(adapter.config.seed);
        for m in &mut adapter.modules {
            m.a = rng.uniform(m.a.len(), 1.0 / (m.in_dim as f32).sqrt());
            m.b = rng.uniform(m.b.len(), b_scale);
        }
        Ok(adapter)
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.config.scale()
    }

    /// Checks that the adapter fits a base model of `cfg`: the configuration, one module per
    /// (layer, target) in order, and every tensor's shape.
    pub fn validate(&self, cfg: &LlamaConfig) -> Result<(), InvalidAdapter> {
        self.config.validate()?;
        check_rank(&self.config, cfg)?;
        let targets = self.config.canonical_targets();
        let layers = self.modules.len() / targets.len();
        if layers != cfg.n_layers || !self.modules.len().is_multiple_of(targets.len()) {
            return Err(InvalidAdapter::LayerCount {
                expected: cfg.n_layers,
                found: layers,
            });
        }
        let r = self.config.rank;
        for (i, m) in self.modules.iter().enumerate() {
            let (layer, proj) = (i / targets.len(), targets[i % targets.len()]);
            if (m.layer, m.proj) != (layer, proj) {
                return Err(InvalidAdapter::ModuleOrder {
                    index: i,
                    expected: (layer, proj),
                    found: (m.layer, m.proj),
                });
            }
            let (out_dim, in_dim) = cfg.proj_shape(proj);
            let shape_err = |tensor, expected, found| InvalidAdapter::Shape {
                layer,
                proj,
                tensor,
                expected,
                found,
            };
            let a_found = if m.a.len() == m.rank * m.in_dim {
                [m.rank, m.in_dim]
            } else {
                [m.rank, m.a.len() / m.rank.max(1)]
            };
            if a_found != [r, in_dim] {
                return Err(shape_err("A", [r, in_dim], a_found));
            }
            let b_found = if m.b.len() == m.out_dim * m.rank {
                [m.out_dim, m.rank]
            } else {
                [m.b.len() / m.rank.max(1), m.rank]
            };
            if b_found != [out_dim, r] {
                return Err(shape_err("B", [out_dim, r], b_found));
            }
        }
        Ok(())
    }

    /// The module adapting projection `proj` of block `layer`.
    pub fn module(&self, layer: usize, proj: Proj) -> Option<&LoraModule> {
        // Modules are by layer, then in canonical target order: look there first.
        let targets = &self.config.targets;
        let n = Proj::ALL.iter().filter(|p| targets.contains(p)).count();
        let before = Proj::ALL
            .iter()
            .take_while(|&&p| p != proj)
            .filter(|p| targets.contains(p))
            .count();
        let is = |m: &&LoraModule| m.layer == layer && m.proj == proj;
        self.modules
            .get(layer * n + before)
            .filter(is)
            .or_else(|| self.modules.iter().find(is))
    }

    /// The number of trainable values.
    pub fn n_params(&self) -> usize {
        self.modules.iter().map(|m| m.a.len() + m.b.len()).sum()
    }

    /// Every tensor with its name (`….lora_a`, `….lora_b`), A before B, in module order.
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        self.modules
            .iter()
            .flat_map(|m| {
                [
                    (format!("{}.lora_a", m.name()), &m.a[..]),
                    (format!("{}.lora_b", m.name()), &m.b[..]),
                ]
            })
            .collect()
    }

    /// [`Self::tensors`], mutable (for optimisers).
    pub fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        self.modules
            .iter_mut()
            .flat_map(|m| [&mut m.a[..], &mut m.b[..]])
            .collect()
    }

    /// The same adapter with every value zero (a gradient accumulator).
    pub fn zeros_like(&self) -> Self {
        Self {
            config: self.config.clone(),
            modules: self.modules.iter().map(LoraModule::zeros_like).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::testutil::tiny_cfg;

    #[test]
    fn init_is_peft_kaiming_uniform_and_zero_b() {
        let cfg = tiny_cfg();
        let lora = LoraAdapter::new(LoraConfig::new(4, &Proj::ALL), &cfg).unwrap();
        assert_eq!(lora.modules.len(), 14);
        lora.validate(&cfg).unwrap();
        for m in &lora.modules {
            let bound = 1.0 / (m.in_dim as f32).sqrt();
            assert!(m.a.iter().all(|v| v.abs() <= bound));
            assert!(m.a.iter().any(|v| v.abs() > bound / 2.0));
            assert!(m.b.iter().all(|&v| v == 0.0));
        }
        let down = lora.module(1, Proj::Down).unwrap();
        assert_eq!((down.in_dim, down.out_dim, down.a.len()), (64, 32, 4 * 64));
        // Seeded: the same seed gives the same adapter, another seed another.
        assert_eq!(
            lora,
            LoraAdapter::new(LoraConfig::new(4, &Proj::ALL), &cfg).unwrap()
        );
        let other = LoraAdapter::new(
            LoraConfig {
                seed: 1,
                ..LoraConfig::new(4, &Proj::ALL)
            },
            &cfg,
        )
        .unwrap();
        assert_ne!(lora.modules[0].a, other.modules[0].a);
    }

    #[test]
    fn invalid_configs_and_shapes_are_named() {
        let cfg = tiny_cfg();
        let err = |c: LoraConfig| LoraAdapter::new(c, &cfg).unwrap_err().to_string();
        assert!(err(LoraConfig::new(0, &[Proj::Q])).contains("rank"));
        // A rank above a projection's smaller dimension is refused before anything is
        // allocated (rank 100,000 once built a billion-parameter adapter); the largest fits.
        let (out_dim, in_dim) = cfg.proj_shape(Proj::Down);
        let max = out_dim.min(in_dim);
        let e = err(LoraConfig::new(100_000, &Proj::ALL));
        assert!(e.contains("LoRA rank 100000 exceeds"), "{e}");
        let e = err(LoraConfig::new(max + 1, &[Proj::Down]));
        assert!(e.contains(&format!("exceeds {max}")), "{e}");
        LoraAdapter::new(LoraConfig::new(max, &[Proj::Down]), &cfg).unwrap();
        assert!(err(LoraConfig::new(2, &[])).contains("targets no projection"));
        assert!(
            err(LoraConfig {
                dropout: 1.0,
                ..LoraConfig::new(2, &[Proj::Q])
            })
            .contains("dropout 1")
        );
        assert!(
            err(LoraConfig {
                alpha: f32::NAN,
                ..LoraConfig::new(2, &[Proj::Q])
            })
            .contains("alpha")
        );

        let lora = LoraAdapter::new(LoraConfig::new(2, &[Proj::Q, Proj::Down]), &cfg).unwrap();
        let mut other = cfg.clone();
        other.ffn_dim = 96;
        let e = lora.validate(&other).unwrap_err().to_string();
        assert!(
            e.contains("A of blk.0.Down") && e.contains("[2, 96]"),
            "{e}"
        );
        other = cfg.clone();
        other.n_layers = 3;
        assert!(
            lora.validate(&other)
                .unwrap_err()
                .to_string()
                .contains("the base model 3")
        );
        let mut bad = lora.clone();
        bad.modules[0].b.pop();
        let e = bad.validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("B of blk.0.Q"), "{e}");
    }
}
