//! fedtune's on-device engine: everything a device runs locally, with no network in sight.
//!
//! A GGUF model file is mapped read-only ([`gguf`]), its weights stay in llama.cpp's block
//! formats ([`quant`]) and are multiplied by CPU kernels chosen at run time ([`kernels`]);
//! [`llama`] runs the decoder (logits, generation), [`tokenizer`] turns text into token ids,
//! [`lora`] holds adapters and their files, and [`backprop`] trains them (forward with a tape,
//! backward, optimisers, the step loop). Data flows one way: file → model → logits or
//! gradients → an adapter the device runtime (`fedtune-client`) uploads.

mod atomic_file;
pub mod backprop;
pub mod gguf;
pub mod kernels;
pub mod llama;
pub mod lora;
pub mod quant;
pub mod tokenizer;

pub use backprop::TrainError;
pub use gguf::{GgufError, GgufFile};
pub use llama::{LlamaConfig, LlamaError, LlamaModel};
pub use lora::{InvalidAdapter, LoraAdapter, LoraConfig, LoraError};
pub use quant::{GgmlType, QuantError};
pub use tokenizer::{Tokenizer, TokenizerError};
