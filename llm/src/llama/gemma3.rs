//! What Gemma 3 (`general.architecture = gemma3`) adds to the llama decoder, read from GGUF
//! metadata as llama.cpp reads it:
//! - embeddings scaled by √dim;
//! - RMSNorm of every query and key head, and norms after attention and after the FFN as well
//!   as before (the GGUF stores Gemma's `1 + w` norm weights already added);
//! - GeGLU (tanh GELU) instead of SwiGLU;
//! - local layers attending to a sliding window of recent positions, with their own RoPE base,
//!   interleaved with global ones (every `sliding_window_pattern`-th layer is global);
//! - queries scaled by 1/√head_dim (1/√(dim/heads) for the 62-layer 27B) instead of the keys'
//!   products; an optional final logit soft-cap; NeoX RoPE order; a tied output head.

use super::LlamaError;
use crate::gguf::Metadata;

/// The architecture name in GGUF metadata.
pub const ARCH: &str = "gemma3";

/// Gemma 3's hyper-parameters beyond the llama ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3 {
    /// Positions a local layer sees (the query's own and the `window - 1` before it); `None`:
    /// every layer is global.
    pub sliding_window: Option<usize>,
    /// Every `pattern`-th layer (counting from 1) is global; the rest are local.
    pub pattern: usize,
    /// RoPE base of the local layers (the global ones use `rope.freq_base`).
    pub rope_base_local: f32,
    /// The factor queries are multiplied by before attention.
    pub query_scale: f32,
    /// `cap · tanh(logit / cap)` on the output, if set.
    pub final_logit_softcap: Option<f32>,
}

impl Gemma3 {
    /// Reads the keys under `gemma3.`; `head_dim`, `dim`, `n_heads` and `n_layers` are the
    /// llama ones, already read.
    pub fn from_metadata(
        md: &Metadata,
        n_layers: usize,
        dim: usize,
        n_heads: usize,
        head_dim: usize,
    ) -> Result<Self, LlamaError> {
        let key = |k: &str| format!("{ARCH}.{k}");
        let sliding_window = md
            .get_u64(&key("attention.sliding_window"))?
            .and_then(|w| usize::try_from(w).ok())
            .filter(|&w| w > 0);
        let pattern_key = key("attention.sliding_window_pattern");
        let pattern = md.get_u64(&pattern_key)?.map_or(Ok(6), |p| {
            usize::try_from(p)
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| LlamaError::Metadata {
                    key: pattern_key.clone(),
                    problem: format!("{p} is not a positive layer count"),
                })
        })?;
        let positive = |k: String, v: Option<f32>, default: Option<f32>| match v.or(default) {
            Some(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
            None => Ok(None),
            Some(v) => Err(LlamaError::Metadata {
                key: k,
                problem: format!("{v} is not a positive number"),
            }),
        };
        let base_key = key("rope.freq_base_swa");
        let rope_base_local =
            positive(base_key.clone(), md.get_f32(&base_key)?, Some(10_000.0))?.unwrap_or(10_000.0);
        let cap_key = key("final_logit_softcapping");
        let cap = md.get_f32(&cap_key)?.filter(|&c| c != 0.0);
        let final_logit_softcap = positive(cap_key, cap, None)?;
        // llama.cpp: the 27B (62 layers) scales by its model width per head.
        let per_head = if n_layers == 62 {
            dim / n_heads
        } else {
            head_dim
        };
        Ok(Self {
            sliding_window,
            pattern,
            rope_base_local,
            query_scale: 1.0 / (per_head as f32).sqrt(),
            final_logit_softcap,
        })
    }

    /// The window of layer `l` if it is a local layer.
    pub fn window_of(&self, l: usize) -> Option<usize> {
        self.sliding_window
            .filter(|_| l % self.pattern < self.pattern - 1)
    }
}
