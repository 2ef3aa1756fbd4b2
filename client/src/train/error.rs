//! Why training could not run, or stopped.

use crate::llama::Proj;
use crate::quant::QuantError;

/// A training error. Every message names what is wrong: the hyper-parameter, the module and
/// tensor, the sequence, or the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
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
    /// An adapter made for another model: wrong number of layers.
    #[error("the adapter has {found} layers, the base model {expected}")]
    LayerCount { expected: usize, found: usize },
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
    /// Two adapters or gradient sets that are not the same list of tensors.
    #[error("gradients do not match: {0}")]
    Mismatch(String),
    /// A token id outside the vocabulary.
    #[error("sequence {seq}, position {pos}: token {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        seq: usize,
        pos: usize,
        token: u32,
        n_vocab: usize,
    },
    /// A loss mask whose length is not the sequence's.
    #[error("sequence {seq} has {tokens} tokens but a loss mask of {mask}")]
    MaskLength {
        seq: usize,
        tokens: usize,
        mask: usize,
    },
    /// A sequence longer than the model's context.
    #[error("sequence {seq} has {len} tokens, more than the context length {context}")]
    TooLong {
        seq: usize,
        len: usize,
        context: usize,
    },
    /// A batch without a single token to predict (every sequence shorter than 2 tokens, or
    /// every target masked).
    #[error("the batch has no target tokens (sequences need 2 tokens and an unmasked target)")]
    EmptyBatch,
    /// The loss or a gradient is NaN or infinite: training diverged. Nothing was updated.
    #[error(
        "step {step}: {what} is not finite (training diverged; the parameters were not updated)"
    )]
    NonFinite { step: u64, what: String },
    /// A base weight that cannot be decoded.
    #[error(transparent)]
    Quant(#[from] QuantError),
}
