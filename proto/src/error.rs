//! Errors of the bundle codec: every way a bundle on the wire can be malformed.

use crate::DType;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown dtype code {0}")]
    UnknownDType(i32),
    #[error("tensor `{name}` cannot hold {dtype} values converted from f32")]
    NotFloat { name: String, dtype: DType },
    #[error("unknown compression code {0}")]
    UnknownCompression(i32),
    #[error("tensor name is empty")]
    EmptyName,
    #[error("tensor `{0}` appears twice in the manifest")]
    DuplicateName(String),
    #[error("tensor `{name}`: shape {shape:?} overflows")]
    ShapeOverflow { name: String, shape: Vec<u64> },
    #[error("bundle of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    #[error(
        "tensor `{name}`: {got} bytes of data, expected {expected} for shape {shape:?} of {dtype}"
    )]
    DataSize {
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("chunk of {0} bytes exceeds the 1 MiB chunk limit")]
    ChunkTooLarge(usize),
    #[error("received {got} bytes, more than the {expected} the header announced")]
    Overrun { expected: u64, got: u64 },
    #[error("transfer ended after {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    #[error("digest mismatch: header says {expected}, data hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("digest must be 16 bytes, got {0}")]
    DigestLength(usize),
    #[error("payload is {got} bytes, manifest needs {expected}")]
    PayloadSize { expected: u64, got: u64 },
    #[error("zstd: {0}")]
    Zstd(String),
    #[error("tensor `{name}` holds a non-finite value at element {index}")]
    NonFinite { name: String, index: usize },
}
