//! Everything that can go wrong while building or using a tokenizer.

use std::path::PathBuf;

/// Why a tokenizer could not be built from its source, or could not encode or decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a tokenizer family this crate does not implement.
    #[error("unsupported tokenizer model {model:?} (supported: {})", supported.join(", "))]
    UnsupportedModel {
        model: String,
        supported: &'static [&'static str],
    },

    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported pre-tokenizer {pre:?} (supported: {})", supported.join(", "))]
    UnsupportedPreTokenizer {
        pre: String,
        supported: Vec<&'static str>,
    },

    /// The vocabulary, its per-token arrays and the merges do not agree with each other.
    #[error("inconsistent vocabulary: {0}")]
    InconsistentVocab(String),

    /// A required piece of tokenizer metadata is missing or has the wrong type.
    #[error("bad tokenizer metadata {key:?}: {reason}")]
    Metadata { key: String, reason: String },

    /// A `tokenizer.json` (or the `tokenizer_config.json` beside it) could not be read or
    /// understood.
    #[error("bad tokenizer file {}: {reason}", path.display())]
    BadJson { path: PathBuf, reason: String },

    /// A token id at or past the end of the vocabulary.
    #[error("token id {id} out of range (vocabulary has {n_vocab} tokens)")]
    IdOutOfRange { id: u32, n_vocab: usize },

    /// The `tokenizers` engine refused to build the tokenizer.
    #[error("cannot build the tokenizer: {0}")]
    Build(String),

    /// The `tokenizers` engine failed while encoding or decoding.
    #[error("tokenizer engine failed while {op}: {reason}")]
    Engine { op: &'static str, reason: String },
}

impl TokenizerError {
    pub(crate) fn engine(op: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Engine {
            op,
            reason: e.to_string(),
        }
    }

    pub(crate) fn inconsistent(msg: impl Into<String>) -> Self {
        Self::InconsistentVocab(msg.into())
    }
}
