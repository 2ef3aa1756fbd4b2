//! Hyper-parameters of a llama-family decoder, read from GGUF metadata.

use super::gemma3::{self, Gemma3};
use super::{LlamaError, Proj};
use crate::gguf::Metadata;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeOrder {
    /// Adjacent pairs (x₂ᵢ, x₂ᵢ₊₁): llama.cpp's "normal" mode, used for `llama` files (the
    /// converter permutes Q/K weights into this order).
    Normal,
    /// Halves (xᵢ, xᵢ₊d/2): GPT-NeoX order, used by Qwen2, Phi, GPT-NeoX and others.
    NeoX,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub arch: String,
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    pub rope_base: f32,
    /// Position multiplier (1 / linear scaling factor).
    pub rope_freq_scale: f32,
    pub rope_order: RopeOrder,
    pub rms_eps: f32,
    pub context_len: usize,
    pub n_vocab: usize,
    /// Gemma 3's additions (`gemma3` files); `None` for a plain llama.
    pub gemma3: Option<Gemma3>,
}

/// Architectures that are a llama decoder with a given RoPE order.
const ARCHES: &[(&str, RopeOrder)] = &[
    ("llama", RopeOrder::Normal),
    ("mistral", RopeOrder::Normal),
    ("granite", RopeOrder::Normal),
    (gemma3::ARCH, RopeOrder::NeoX),
];

impl LlamaConfig {
    /// `(out, in)` of projection `p` in a block.
    pub fn proj_shape(&self, p: Proj) -> (usize, usize) {
        match p {
            Proj::Q => (self.q_dim(), self.dim),
            Proj::K | Proj::V => (self.kv_dim(), self.dim),
            Proj::O => (self.dim, self.q_dim()),
            Proj::Gate | Proj::Up => (self.ffn_dim, self.dim),
            Proj::Down => (self.dim, self.ffn_dim),
        }
    }

    /// Reads the config; `n_vocab` comes from the embedding matrix.
    pub fn from_metadata(md: &Metadata, n_vocab: usize) -> Result<Self, LlamaError> {
        let arch = md
            .get_str("general.architecture")?
            .ok_or_else(|| missing("general.architecture"))?
            .to_string();
        let rope_order = ARCHES
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, o)| *o)
            .ok_or_else(|| LlamaError::UnsupportedArch(arch.clone()))?;
        let key = |k: &str| format!("{arch}.{k}");
        let req = |k: &str| -> Result<usize, LlamaError> {
            let k = key(k);
            let v = md.get_u64(&k)?.ok_or_else(|| missing(&k))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| LlamaError::Metadata {
                    key: k,
                    problem: format!("{v} is not a positive size"),
                })
        };
        let n_heads = req("attention.head_count")?;
        let dim = req("embedding_length")?;
        let n_kv_heads = md
            .get_u64(&key("attention.head_count_kv"))?
            .map_or(n_heads, |v| v as usize);
        let head_dim = md
            .get_u64(&key("attention.key_length"))?
            .map_or(dim / n_heads, |v| v as usize);
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(LlamaError::Metadata {
                key: key("attention.head_count_kv"),
                problem: format!("{n_kv_heads} does not divide the {n_heads} query heads"),
            });
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(LlamaError::Metadata {
                key: key("attention.key_length"),
                problem: format!("head size {head_dim} must be even and positive"),
            });
        }
        let rope_dim = md
            .get_u64(&key("rope.dimension_count"))?
            .map_or(head_dim, |v| v as usize);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(LlamaError::Metadata {
                key: key("rope.dimension_count"),
                problem: format!("{rope_dim} must be even and at most the head size {head_dim}"),
            });
        }
        let scaling = md.get_str(&key("rope.scaling.type"))?.unwrap_or("none");
        let rope_freq_scale = match scaling {
            "none" => 1.0,
            "linear" => {
                let f = md.get_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
                if !(f.is_finite() && f > 0.0) {
                    return Err(LlamaError::Metadata {
                        key: key("rope.scaling.factor"),
                        problem: format!("{f} is not a positive factor"),
                    });
                }
                1.0 / f
            }
            other => {
                return Err(LlamaError::Metadata {
                    key: key("rope.scaling.type"),
                    problem: format!("`{other}` scaling is not supported (none, linear)"),
                });
            }
        };
        let n_layers = req("block_count")?;
        let gemma3 = (arch == gemma3::ARCH)
            .then(|| Gemma3::from_metadata(md, n_layers, dim, n_heads, head_dim))
            .transpose()?;
        Ok(Self {
            n_layers,
            ffn_dim: req("feed_forward_length")?,
            context_len: md
                .get_u64(&key("context_length"))?
                .map_or(2048, |v| v as usize),
            rope_base: md.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rms_eps: md
                .get_f32(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            arch,
            dim,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dim,
            rope_freq_scale,
            rope_order,
            n_vocab,
            gemma3,
        })
    }

    /// RoPE base and position scale of layer `l` (Gemma 3's local layers have their own).
    pub fn rope_of(&self, l: usize) -> (f32, f32) {
        match &self.gemma3 {
            Some(g) if g.window_of(l).is_some() => (g.rope_base_local, 1.0),
            _ => (self.rope_base, self.rope_freq_scale),
        }
    }

    /// The sliding window of layer `l`, if it attends to recent positions only.
    pub fn window_of(&self, l: usize) -> Option<usize> {
        self.gemma3.as_ref().and_then(|g| g.window_of(l))
    }

    /// The factor attention scores are scaled by: 1/√head_dim; 1 for Gemma 3, whose queries
    /// are scaled instead ([`Gemma3::query_scale`]), as llama.cpp does.
    pub fn attn_scale(&self) -> f32 {
        if self.gemma3.is_some() {
            1.0
        } else {
            1.0 / (self.head_dim as f32).sqrt()
        }
    }

    /// Writes the config as GGUF metadata (`general.architecture` and the `{arch}.*` keys
    /// [`Self::from_metadata`] reads), for model files this crate makes.
    pub fn write_metadata(&self, w: &mut crate::gguf::GgufWriter) {
        use crate::gguf::Value;
        let u = |v: usize| Value::U32(u32::try_from(v).unwrap_or(u32::MAX));
        let a = &self.arch;
        w.add_kv("general.architecture", Value::String(a.clone()));
        w.add_kv(format!("{a}.block_count"), u(self.n_layers));
        w.add_kv(format!("{a}.context_length"), u(self.context_len));
        w.add_kv(format!("{a}.embedding_length"), u(self.dim));
        w.add_kv(format!("{a}.feed_forward_length"), u(self.ffn_dim));
        w.add_kv(format!("{a}.attention.head_count"), u(self.n_heads));
        w.add_kv(format!("{a}.attention.head_count_kv"), u(self.n_kv_heads));
        if self.head_dim * self.n_heads != self.dim {
            w.add_kv(format!("{a}.attention.key_length"), u(self.head_dim));
            w.add_kv(format!("{a}.attention.value_length"), u(self.head_dim));
        }
        if self.rope_dim != self.head_dim {
            w.add_kv(format!("{a}.rope.dimension_count"), u(self.rope_dim));
        }
        w.add_kv(format!("{a}.rope.freq_base"), Value::F32(self.rope_base));
        if self.rope_freq_scale != 1.0 {
            w.add_kv(
                format!("{a}.rope.scaling.type"),
                Value::String("linear".into()),
            );
            w.add_kv(
                format!("{a}.rope.scaling.factor"),
                Value::F32(1.0 / self.rope_freq_scale),
            );
        }
        w.add_kv(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(self.rms_eps),
        );
        if let Some(g) = &self.gemma3 {
            if let Some(window) = g.sliding_window {
                w.add_kv(format!("{a}.attention.sliding_window"), u(window));
                w.add_kv(
                    format!("{a}.attention.sliding_window_pattern"),
                    u(g.pattern),
                );
                w.add_kv(
                    format!("{a}.rope.freq_base_swa"),
                    Value::F32(g.rope_base_local),
                );
            }
            if let Some(cap) = g.final_logit_softcap {
                w.add_kv(format!("{a}.final_logit_softcapping"), Value::F32(cap));
            }
        }
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

fn missing(key: &str) -> LlamaError {
    LlamaError::Metadata {
        key: key.to_string(),
        problem: "missing".to_string(),
    }
}
