//! Why training could not run, or stopped.

use crate::lora::InvalidAdapter;
use crate::quant::QuantError;

/// A training error. Every message names what is wrong: the hyper-parameter, the module and
/// tensor, the sequence, or the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The adapter does not fit the model, or its configuration is invalid.
    #[error(transparent)]
    Adapter(#[from] InvalidAdapter),
    /// Two gradient sets (or a gradient set and its parameters) that are not the same list
    /// of tensors.
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
    /// An architecture the backward pass does not implement (Gemma 3 runs inference only).
    #[error(
        "training `{0}` models is not supported yet (inference is; training runs llama blocks)"
    )]
    UnsupportedArch(String),
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
