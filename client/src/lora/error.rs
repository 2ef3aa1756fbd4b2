//! Why an adapter file could not be read, written or merged.

use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::llama::LlamaError;
use crate::quant::QuantError;
use crate::train::TrainError;

/// An adapter file error. Every message names the file and what in it is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not in the format its name says (bad JSON, bad safetensors header, a
    /// GGUF model where an adapter was expected, …).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// An adapter setting fedtune does not support (DoRA, rsLoRA, per-module ranks, …).
    #[error("{}: {field} = {value} is not supported ({why})", path.display())]
    Unsupported {
        path: PathBuf,
        field: String,
        value: String,
        why: &'static str,
    },
    /// A tensor the adapter needs is not in the file.
    #[error("{}: tensor {name} is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor that adapts nothing in the base model (another architecture, more layers, a
    /// module fedtune does not adapt).
    #[error("{}: tensor {name} does not fit the base model ({why})", path.display())]
    UnexpectedTensor {
        path: PathBuf,
        name: String,
        why: String,
    },
    /// A tensor whose shape does not fit the base model.
    #[error("{}: tensor {name} has shape {found:?}, the base model needs {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor holding NaN or an infinity.
    #[error("{}: tensor {name} holds a non-finite value at index {index}", path.display())]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
    },
    /// The adapter was made for another architecture.
    #[error("{}: the adapter is for architecture {adapter:?}, the base model is {model:?}", path.display())]
    Architecture {
        path: PathBuf,
        adapter: String,
        model: String,
    },
    /// The adapter is not valid for the base model.
    #[error(transparent)]
    Invalid(#[from] TrainError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error(transparent)]
    Model(#[from] LlamaError),
}
