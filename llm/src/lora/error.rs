//! Why an adapter file could not be read, written or merged.

use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::llama::LlamaError;
use crate::llama::Proj;
use crate::quant::QuantError;

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
    Invalid(#[from] InvalidAdapter),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error(transparent)]
    Model(#[from] LlamaError),
}

/// An adapter whose configuration is invalid, or that does not fit a base model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAdapter {
    /// A LoRA rank of 0 (no adapter at all).
    #[error("LoRA rank must be at least 1")]
    ZeroRank,
    /// A LoRA configuration that targets no projection.
    #[error("LoRA targets no projection (choose some of q, k, v, o, gate, up, down)")]
    NoTargets,
    /// A LoRA alpha that is not a positive finite number.
    #[error("LoRA alpha {0} is not a positive finite number")]
    BadAlpha(f32),
    /// A dropout probability outside [0, 1).
    #[error("LoRA dropout {0} is not a probability in [0, 1)")]
    BadDropout(f32),
    /// A rank above a targeted projection's smaller dimension: it adds parameters, memory and
    /// time without adding anything a full-rank update could not express.
    #[error("LoRA rank {rank} exceeds {max}, the smaller dimension of the {proj:?} projection")]
    RankTooLarge { rank: usize, proj: Proj, max: usize },
    /// An adapter made for another model: wrong number of layers.
    #[error("the adapter has {found} layers, the base model {expected}")]
    LayerCount { expected: usize, found: usize },
    /// The adapter's modules are not one per (layer, target) in canonical order.
    #[error("module {index} adapts blk.{}.{:?}, expected blk.{}.{:?}", found.0, found.1, expected.0, expected.1)]
    ModuleOrder {
        index: usize,
        expected: (usize, Proj),
        found: (usize, Proj),
    },
    /// An adapter tensor whose shape does not fit the base projection.
    #[error(
        "LoRA {tensor} of blk.{layer}.{proj:?} is {found:?}, the base model needs {expected:?}"
    )]
    Shape {
        layer: usize,
        proj: Proj,
        /// `"A"` or `"B"`.
        tensor: &'static str,
        /// [rows, cols].
        expected: [usize; 2],
        found: [usize; 2],
    },
}
