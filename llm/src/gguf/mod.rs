//! GGUF model files (llama.cpp's format): a validating reader over a memory map, and a writer.
//!
//! A GGUF file is a little-endian header (magic `GGUF`, version, counts), typed metadata
//! (`key → value`, e.g. the architecture's hyperparameters and the tokenizer vocabulary),
//! tensor infos (name, dims, ggml type, offset), and an aligned data section holding the
//! tensors' blocks. Versions 2 and 3 are read; version 3 is written.
//!
//! [`GgufFile::open`] maps the file and validates all of it up front, so model loading can
//! then take tensor bytes without further checks: the parser ([`parse`]) treats its input as
//! hostile and answers every inconsistency with a specific [`GgufError`], never a panic.
//! [`GgufWriter`] builds files that llama.cpp loads (used to save merged or re-quantized models).
//!
//! Element formats (block sizes, type numbers) come from [`crate::quant::GgmlType`].

mod error;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgufFile, GgufLayout, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS,
    TensorInfo, parse,
};
pub use value::{Metadata, Value};
pub use writer::{GgufWriter, WRITE_VERSION};
