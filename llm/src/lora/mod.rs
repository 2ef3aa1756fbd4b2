//! LoRA adapters over a frozen llama base: the adapter itself, applying it at inference, its
//! files in the formats the ecosystem loads, and merging it into the base.
//!
//! - [`LoraAdapter`] (in `adapter.rs`): configuration, PEFT initialisation, shape checks;
//! - [`add_delta`] (in `apply.rs`): `y += (alpha/r)·(x·Aᵀ)·Bᵀ` beside a quantized product;
//! - [`peft`]: Hugging Face PEFT directories (`adapter_model.safetensors` +
//!   `adapter_config.json`);
//! - [`gguf_adapter`]: llama.cpp's GGUF LoRA files (`general.type = adapter`);
//! - [`merge`]: base + adapter written as one GGUF, re-quantized;
//! - [`load`]: either file format, told apart by the path.
//!
//! In memory an adapter is in the GGUF model's layout. Hugging Face checkpoints order the rows
//! of the query and key projections differently (llama.cpp's converter permutes them for its
//! RoPE), so [`peft`] permutes the rows of B for `q_proj` and `k_proj` on the way in and out.

mod adapter;
mod apply;
mod error;
pub mod gguf_adapter;
mod load;
pub mod merge;
pub mod peft;

pub use adapter::{LoraAdapter, LoraConfig, LoraModule};
pub use apply::add_delta;
pub use error::{InvalidAdapter, LoraError};
pub use load::{load, recorded_base};
