//! The llama-family decoder: weights from GGUF, forward pass, KV cache, sampling.
//!
//! The forward pass works on a batch of consecutive tokens (prompt processing) or one token
//! (generation) with the same code; weights stay quantized in the memory map.

mod attention;
mod config;
mod error;
mod forward;
mod generate;
pub(crate) mod ggml_math;
mod kv_cache;
mod model;
mod quantize;
pub mod random;
pub mod rope;
mod sampling;
mod weights;

pub use config::{LlamaConfig, RopeOrder};
pub use error::LlamaError;
pub use forward::Logits;
pub use generate::{GenerateStats, nll};
pub use kv_cache::{KvCache, KvType};
pub use model::LlamaModel;
pub(crate) use quantize::file_type;
pub use quantize::{requantize, rewrite};
pub use sampling::{Sampler, SamplerConfig, argmax};
pub use weights::{Layer, Linear, Proj, Weights};
