//! Errors of the quantization dispatchers.

use super::GgmlType;

/// Why a row could not be quantized or dequantized. Every message names the format and sizes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// The number of values is not a multiple of the format's block length.
    #[error("{ty}: {values} values is not a whole number of {block_len}-value blocks")]
    PartialBlock {
        ty: GgmlType,
        values: usize,
        block_len: usize,
    },
    /// The number of bytes is not a multiple of the format's block size.
    #[error("{ty}: {bytes} bytes is not a whole number of {block_bytes}-byte blocks")]
    PartialBlockBytes {
        ty: GgmlType,
        bytes: usize,
        block_bytes: usize,
    },
    /// Whole blocks on both sides, but the value buffer and the byte buffer disagree on how
    /// many.
    #[error("{ty}: {values} values take {expected_bytes} bytes, but the byte buffer has {bytes}")]
    LengthMismatch {
        ty: GgmlType,
        values: usize,
        expected_bytes: usize,
        bytes: usize,
    },
    /// The row's byte size does not fit in `usize`.
    #[error("{ty}: a row of {values} values is too large")]
    TooLarge { ty: GgmlType, values: usize },
    /// fedtune has no quantizer for this format (the k-quants other than q8_k).
    #[error("{ty}: quantizing to this format is not supported")]
    CannotQuantize { ty: GgmlType },
    /// fedtune has no dequantizer for this format (no current format; kept for formats added
    /// to [`GgmlType`] before their decoder).
    #[error("{ty}: dequantizing this format is not supported")]
    CannotDequantize { ty: GgmlType },
}
