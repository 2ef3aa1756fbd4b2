//! The llama-family decoder: weights from GGUF, forward pass, KV cache, sampling.
//!
//! The forward pass works on a batch of consecutive tokens (prompt processing) or one token
//! (generation) with the same code; weights stay quantized in the memory map.

mod adapter;
mod attention;
mod config;
mod error;
mod forward;
pub mod gemma3;
mod generate;
pub(crate) mod ggml_math;
mod kv_cache;
mod model;
mod quantize;
pub mod random;
pub(crate) mod rope;
mod sampling;
mod weights;

pub use adapter::{AdapterFitError, ProjectionAdapter};
pub use config::{LlamaConfig, RopeOrder};
pub use error::LlamaError;
pub use forward::Logits;
pub use generate::{GenerateStats, nll};
pub use kv_cache::{KvCache, KvType};
pub use model::LlamaModel;
pub(crate) use quantize::file_type;
pub use quantize::{requantize, rewrite};
pub use sampling::{Sampler, SamplerConfig, argmax};
pub use weights::{GemmaNorms, Layer, Linear, Proj, Weights};

#[cfg(test)]
pub(crate) mod testutil {
    use crate::llama::{LlamaConfig, RopeOrder};

    /// dim 32, 4 heads of 8 (2 kv heads), FFN 64, 2 layers, vocab 64.
    pub fn tiny_cfg() -> LlamaConfig {
        LlamaConfig {
            arch: "llama".into(),
            n_layers: 2,
            dim: 32,
            ffn_dim: 64,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            rope_dim: 8,
            rope_base: 10_000.0,
            rope_freq_scale: 1.0,
            rope_order: RopeOrder::Normal,
            rms_eps: 1e-5,
            context_len: 128,
            n_vocab: 64,
            gemma3: None,
        }
    }
}
