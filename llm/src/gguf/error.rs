//! Everything that can be wrong with a GGUF file (or with a request to write one).
//!
//! Each variant says what was wrong and where, so a bad model file can be diagnosed from the
//! message alone: the byte offset for structural damage, the key for metadata, the tensor name
//! for tensor problems.

use std::io;
use std::path::PathBuf;

use crate::quant::GgmlType;

/// Why a GGUF file could not be read, a metadata value could not be converted, or a file could
/// not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Opening, mapping, creating or renaming a file failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The file at `path` is not a valid GGUF file; `source` says why.
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<GgufError>,
    },

    /// Writing to the destination failed.
    #[error("writing GGUF data failed: {0}")]
    Write(#[source] io::Error),

    /// The input ends before a field it announces.
    #[error(
        "truncated at byte {offset} while reading {what}: need {needed} bytes, {available} left"
    )]
    Truncated {
        offset: u64,
        what: String,
        needed: u64,
        available: u64,
    },

    /// The first four bytes are not `GGUF`.
    #[error("bad magic {found:02x?}: not a GGUF file (expected \"GGUF\")")]
    BadMagic { found: Vec<u8> },

    /// Only versions 2 and 3 are read (version 1 used 32-bit counts and is long obsolete).
    #[error("unsupported GGUF version {version}{}", version_hint(*.version))]
    UnsupportedVersion { version: u32 },

    /// A count (entries, tensors, array elements) larger than the rest of the input could hold.
    #[error(
        "{what} is {count} (at byte {offset}), more than the {remaining} bytes left can hold \
         (at least {min_each} bytes each)"
    )]
    CountTooLarge {
        what: String,
        count: u64,
        offset: u64,
        remaining: u64,
        min_each: u64,
    },

    /// A metadata value (or array element) type number that GGUF does not define.
    #[error("metadata `{key}`: unknown value type {type_id} at byte {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },

    /// A bool stored as something other than 0 or 1.
    #[error("metadata `{key}`: bool byte {byte} at byte {offset} is neither 0 nor 1")]
    InvalidBool { key: String, byte: u8, offset: u64 },

    /// A string that is not UTF-8.
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },

    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`](crate::gguf::MAX_ARRAY_DEPTH).
    #[error("metadata `{key}`: arrays nested deeper than {max} levels")]
    NestingTooDeep { key: String, max: usize },

    /// The same metadata key twice.
    #[error("duplicate metadata key `{key}`")]
    DuplicateKey { key: String },

    /// `general.alignment` is not a `u32` holding a non-zero power of two.
    #[error("`general.alignment` must be a u32 non-zero power of two, found {found}")]
    BadAlignment { found: String },

    /// The same tensor name twice.
    #[error("duplicate tensor `{name}`")]
    DuplicateTensor { name: String },

    /// More than 4 dimensions (ggml's limit).
    #[error("tensor `{tensor}`: {n_dims} dimensions (at most 4)")]
    TooManyDims { tensor: String, n_dims: u32 },

    /// A `ggml_type` number fedtune does not know.
    #[error("tensor `{tensor}`: unknown ggml type id {type_id}")]
    UnknownTensorType { tensor: String, type_id: u32 },

    /// A type with no GGUF number (NF4) given to the writer.
    #[error("tensor `{tensor}`: type {ty} cannot be stored in GGUF")]
    TypeNotStorable { tensor: String, ty: GgmlType },

    /// The row length (`dims[0]`) is not a whole number of blocks of the tensor's type.
    #[error(
        "tensor `{tensor}`: row length {row_len} is not a multiple of the {ty} block length {block_len}"
    )]
    RowNotBlockMultiple {
        tensor: String,
        ty: GgmlType,
        row_len: u64,
        block_len: usize,
    },

    /// The element count or byte size overflows.
    #[error("tensor `{tensor}`: dims {dims:?} give a size that overflows")]
    TensorTooLarge { tensor: String, dims: Vec<u64> },

    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("tensor `{tensor}`: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    /// Tensor data past the end of the file.
    #[error(
        "tensor `{tensor}`: data at offset {offset} + {n_bytes} bytes is outside the \
         {data_len}-byte data section"
    )]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        n_bytes: u64,
        data_len: u64,
    },

    /// Two tensors whose data share bytes.
    #[error("tensors `{first}` and `{second}` overlap")]
    OverlappingTensors { first: String, second: String },

    /// The writer was given a data buffer of the wrong length.
    #[error("tensor `{tensor}`: {actual} data bytes given, its dims and type need {expected}")]
    DataSizeMismatch {
        tensor: String,
        expected: usize,
        actual: usize,
    },

    /// The writer was given an array whose elements do not all have the same type.
    #[error("metadata `{key}`: array mixes {first} and {other} elements")]
    MixedArray {
        key: String,
        first: &'static str,
        other: &'static str,
    },

    /// A typed metadata getter found a value of another type.
    #[error("metadata `{key}`: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A typed metadata getter found a value that does not fit the requested type.
    #[error("metadata `{key}`: value {value} does not fit in {target}")]
    OutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },
}

impl GgufError {
    /// The error itself, without the [`InFile`](Self::InFile) wrapper that names the file.
    pub fn innermost(&self) -> &GgufError {
        match self {
            Self::InFile { source, .. } => source.innermost(),
            other => other,
        }
    }
}

/// A hint for versions that look byte-swapped (a big-endian file).
fn version_hint(version: u32) -> &'static str {
    if version == 1 {
        " (version 1 is obsolete; convert the model again with a current llama.cpp)"
    } else if matches!(version.swap_bytes(), 2 | 3) {
        " (looks like a big-endian file; only little-endian GGUF is supported)"
    } else {
        " (versions 2 and 3 are supported)"
    }
}
