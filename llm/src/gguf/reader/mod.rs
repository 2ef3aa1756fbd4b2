//! Reading GGUF: a validating parser over bytes, and [`GgufFile`], which runs it over a memory map.
//!
//! [`parse`] is a pure function of a byte slice (it is what the fuzz target exercises). It
//! checks every count against the bytes that remain before allocating, every size with checked
//! arithmetic, and every tensor against the type table, the alignment, the end of the file and
//! the other tensors, so that once a [`GgufFile`] exists, [`GgufFile::tensor_data`] cannot fail.

use std::collections::HashMap;

use super::{GgufError, Metadata, Value};
use crate::quant::GgmlType;
use cursor::Reader;
use header::read_header;
use metadata::{alignment_of, read_metadata};
use tensor_info::{check_extents, read_tensor_infos};

pub use file::GgufFile;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`] (a `u32` power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's limit on tensor dimensions.
pub const MAX_DIMS: usize = 4;
/// How deeply metadata arrays may nest (GGUF allows arrays of arrays; real files use one level,
/// and the bound keeps recursion on hostile input shallow).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Where one tensor's data is and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the file's data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: usize,
}

impl TensorInfo {
    /// The number of values (the product of the dims; 1 for no dims).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Values per row (`dims[0]`; 1 for no dims).
    pub fn row_len(&self) -> usize {
        self.dims
            .first()
            .map_or(1, |&d| usize::try_from(d).unwrap_or(usize::MAX))
    }

    /// The number of rows (the product of the dims after the first).
    pub fn n_rows(&self) -> usize {
        let n = self
            .dims
            .iter()
            .skip(1)
            .fold(1u64, |n, &d| n.saturating_mul(d));
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// The bytes of a tensor with these dims and type, after checking that ggml could hold it:
/// at most [`MAX_DIMS`] dims, rows a whole number of blocks, no overflow.
pub(crate) fn tensor_n_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<usize, GgufError> {
    if dims.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name.to_owned(),
            n_dims: u32::try_from(dims.len()).unwrap_or(u32::MAX),
        });
    }
    let too_large = || GgufError::TensorTooLarge {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let row_len = dims.first().copied().unwrap_or(1);
    let block_len = ty.block_len();
    if u64::try_from(block_len).map_or(true, |b| b == 0 || !row_len.is_multiple_of(b)) {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_owned(),
            ty,
            row_len,
            block_len,
        });
    }
    // ggml counts elements in an int64_t.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(too_large)?;
    if i64::try_from(n_elements).is_err() {
        return Err(too_large());
    }
    let n_rows = dims
        .iter()
        .skip(1)
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(too_large)?;
    let row_bytes = usize::try_from(row_len)
        .ok()
        .and_then(|n| ty.row_bytes(n))
        .ok_or_else(too_large)?;
    usize::try_from(n_rows)
        .ok()
        .and_then(|rows| row_bytes.checked_mul(rows))
        .filter(|&n| u64::try_from(n).is_ok())
        .ok_or_else(too_large)
}

/// What a successful [`parse`] found: everything in a GGUF file except the tensor data.
#[derive(Debug, Clone)]
pub struct GgufLayout {
    version: u32,
    alignment: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_offset: u64,
    file_size: u64,
}

impl GgufLayout {
    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data, in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(*self.by_name.get(name)?)
    }

    /// Where the data section starts, from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The size of the parsed input.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The byte range of `t`'s data within the file, if it lies inside it.
    fn data_range(&self, t: &TensorInfo) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
        Some(start..start.checked_add(t.n_bytes)?)
    }
}

/// Parses and validates a whole GGUF file held in memory: the header, the metadata, the
/// tensor infos, then where each tensor's data lies.
pub fn parse(bytes: &[u8]) -> Result<GgufLayout, GgufError> {
    let mut r = Reader::new(bytes);
    let header = read_header(&mut r)?;
    let metadata = read_metadata(&mut r, header.kv_count)?;
    let alignment = alignment_of(&metadata)?;
    let (tensors, by_name) = read_tensor_infos(&mut r, &header, alignment)?;
    // The data section starts at the next multiple of the alignment. A file without tensor data
    // may end before that point; tensors with data then fail the bounds check.
    let file_size = r.len();
    let data_offset = align_up(r.offset(), alignment).ok_or_else(|| GgufError::Truncated {
        offset: r.offset(),
        what: "padding before the tensor data".to_owned(),
        needed: alignment,
        available: 0,
    })?;
    check_extents(&tensors, file_size.saturating_sub(data_offset))?;
    Ok(GgufLayout {
        version: header.version,
        alignment,
        metadata,
        tensors,
        by_name,
        data_offset,
        file_size,
    })
}

/// `n` rounded up to a multiple of `alignment` (a power of two), or `None` on overflow.
pub(crate) fn align_up(n: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    Some(n.checked_add(mask)? & !mask)
}

mod cursor;
mod file;
mod header;
mod metadata;
mod tensor_info;
#[cfg(test)]
pub(super) mod tests;
