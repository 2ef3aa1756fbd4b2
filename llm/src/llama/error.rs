//! Why a model could not be loaded or run.

use crate::gguf::GgufError;
use crate::quant::{GgmlType, QuantError};

#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture `{0}` (supported: llama and llama-shaped models)")]
    UnsupportedArch(String),
    #[error("metadata `{key}`: {problem}")]
    Metadata { key: String, problem: String },
    #[error("tensor `{0}` is missing from the model file")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor `{name}` is stored as {ty}, which fedtune cannot compute with here")]
    TensorType { name: String, ty: GgmlType },
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    TokenOutOfRange { token: u32, n_vocab: usize },
    #[error(
        "context full: {needed} positions needed, the context holds {capacity} (use a sliding window)"
    )]
    ContextFull { needed: usize, capacity: usize },
    #[error("the adapter does not fit this model: {0}")]
    Adapter(#[source] super::AdapterFitError),
    #[error(transparent)]
    Quant(#[from] QuantError),
}
