//! Reading GGUF: a validating parser over bytes, and [`GgufFile`], which runs it over a memory map.
//!
//! [`parse`] is a pure function of a byte slice (it is what the fuzz target exercises). It
//! checks every count against the bytes that remain before allocating, every size with checked
//! arithmetic, and every tensor against the type table, the alignment, the end of the file and
//! the other tensors, so that once a [`GgufFile`] exists, [`GgufFile::tensor_data`] cannot fail.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{GgufError, Metadata, Value};
use crate::quant::GgmlType;

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

/// Parses and validates a whole GGUF file held in memory.
pub fn parse(bytes: &[u8]) -> Result<GgufLayout, GgufError> {
    let mut r = Reader { bytes, pos: 0 };

    let prefix = bytes.get(..4).unwrap_or(bytes);
    if prefix != MAGIC.get(..prefix.len()).unwrap_or(&MAGIC) {
        return Err(GgufError::BadMagic {
            found: prefix.to_vec(),
        });
    }
    r.take(4, What::Header("magic"))?;
    let version = r.u32(What::Header("version"))?;
    if !matches!(version, 2 | 3) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    // The tensor count is checked against the input once the metadata has been read.
    let tensor_count_offset = r.offset();
    let tensor_count = r.u64(What::Header("tensor count"))?;
    let kv_count = r.count(What::Header("metadata entry count"), MIN_KV_BYTES)?;

    let mut metadata = Metadata::new();
    for i in 0..kv_count {
        let key = r.string(What::Key(i))?;
        let ty_offset = r.offset();
        let ty = r.u32(What::ValueType(&key))?;
        if min_value_bytes(ty).is_none() {
            return Err(GgufError::UnknownValueType {
                key,
                type_id: ty,
                offset: ty_offset,
            });
        }
        let value = read_value(&mut r, &key, ty, 0)?;
        metadata.insert(key, value)?;
    }

    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(&Value::U32(a)) if a.is_power_of_two() => u64::from(a),
        Some(v) => {
            return Err(GgufError::BadAlignment {
                found: format!("{} {v}", v.type_name()),
            });
        }
    };

    let remaining = r.remaining();
    if tensor_count
        .checked_mul(MIN_TENSOR_INFO_BYTES)
        .is_none_or(|need| need > remaining)
    {
        return Err(GgufError::CountTooLarge {
            what: What::Header("tensor count").to_string(),
            count: tensor_count,
            offset: tensor_count_offset,
            remaining,
            min_each: MIN_TENSOR_INFO_BYTES,
        });
    }
    // tensor_count is bounded by the input length: this allocation is bounded too.
    let mut tensors = Vec::with_capacity(usize::try_from(tensor_count).unwrap_or(0));
    let mut by_name = HashMap::new();
    for i in 0..tensor_count {
        let name = r.string(What::TensorName(i))?;
        let n_dims = r.u32(What::Tensor(&name, "dimension count"))?;
        if usize::try_from(n_dims).map_or(true, |n| n > MAX_DIMS) {
            return Err(GgufError::TooManyDims {
                tensor: name,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(MAX_DIMS);
        for _ in 0..n_dims {
            dims.push(r.u64(What::Tensor(&name, "dims"))?);
        }
        let type_id = r.u32(What::Tensor(&name, "type"))?;
        let offset = r.u64(What::Tensor(&name, "offset"))?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownTensorType {
                tensor: name,
                type_id,
            });
        };
        let n_bytes = tensor_n_bytes(&name, &dims, ty)?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedOffset {
                tensor: name,
                offset,
                alignment,
            });
        }
        if by_name.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        by_name.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    // The data section starts at the next multiple of the alignment. A file without tensor data
    // may end before that point; tensors with data then fail the bounds check below.
    let file_size = r.len();
    let data_offset = align_up(r.offset(), alignment).ok_or_else(|| GgufError::Truncated {
        offset: r.offset(),
        what: "padding before the tensor data".to_owned(),
        needed: alignment,
        available: 0,
    })?;
    let data_len = file_size.saturating_sub(data_offset);

    let mut extents = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let n_bytes = u64::try_from(t.n_bytes).unwrap_or(u64::MAX);
        let end = t.offset.checked_add(n_bytes).filter(|&end| end <= data_len);
        let Some(end) = end else {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                n_bytes,
                data_len,
            });
        };
        if n_bytes > 0 {
            extents.push((t.offset, end, i));
        }
    }
    extents.sort_unstable();
    for pair in extents.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = *pair
            && end_a > start_b
        {
            let name = |i: usize| tensors.get(i).map(|t| t.name.clone()).unwrap_or_default();
            return Err(GgufError::OverlappingTensors {
                first: name(a),
                second: name(b),
            });
        }
    }

    Ok(GgufLayout {
        version,
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

/// Smallest tensor info: empty name (8), dimension count (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Smallest metadata entry: empty key (8), value type (4), one-byte value (1).
const MIN_KV_BYTES: u64 = 13;

/// The smallest encoding of a value of type `ty`, or `None` if GGUF has no such type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8, // a string is at least its u64 length
        9 => 12,          // element type (4) + count (8)
        _ => return None,
    })
}

/// Reads one value of type `ty` (already known to be valid) belonging to `key`.
fn read_value(r: &mut Reader<'_>, key: &str, ty: u32, depth: usize) -> Result<Value, GgufError> {
    let what = What::Value(key);
    Ok(match ty {
        0 => Value::U8(r.u8(what)?),
        1 => Value::I8(i8::from_le_bytes(r.array(what)?)),
        2 => Value::U16(u16::from_le_bytes(r.array(what)?)),
        3 => Value::I16(i16::from_le_bytes(r.array(what)?)),
        4 => Value::U32(r.u32(what)?),
        5 => Value::I32(i32::from_le_bytes(r.array(what)?)),
        6 => Value::F32(f32::from_le_bytes(r.array(what)?)),
        7 => {
            let offset = r.offset();
            match r.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                byte => {
                    return Err(GgufError::InvalidBool {
                        key: key.to_owned(),
                        byte,
                        offset,
                    });
                }
            }
        }
        8 => Value::String(r.string(what)?),
        10 => Value::U64(r.u64(what)?),
        11 => Value::I64(i64::from_le_bytes(r.array(what)?)),
        12 => Value::F64(f64::from_le_bytes(r.array(what)?)),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_owned(),
                    max: MAX_ARRAY_DEPTH,
                });
            }
            let ty_offset = r.offset();
            let elem_ty = r.u32(What::ArrayType(key))?;
            let Some(min) = min_value_bytes(elem_ty) else {
                return Err(GgufError::UnknownValueType {
                    key: key.to_owned(),
                    type_id: elem_ty,
                    offset: ty_offset,
                });
            };
            let n = r.count(What::Array(key), min)?;
            let mut elements = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for _ in 0..n {
                elements.push(read_value(r, key, elem_ty, depth + 1)?);
            }
            Value::Array(elements)
        }
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.to_owned(),
                type_id: ty,
                offset: r.offset(),
            });
        }
    })
}

/// What the parser was reading, for error messages (formatted only when there is an error).
#[derive(Clone, Copy)]
enum What<'a> {
    Header(&'static str),
    Key(u64),
    ValueType(&'a str),
    Value(&'a str),
    ArrayType(&'a str),
    Array(&'a str),
    TensorName(u64),
    Tensor(&'a str, &'static str),
}

impl fmt::Display for What<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(field) => write!(f, "the {field} in the header"),
            Self::Key(i) => write!(f, "the key of metadata entry {i}"),
            Self::ValueType(key) => write!(f, "the value type of metadata `{key}`"),
            Self::Value(key) => write!(f, "the value of metadata `{key}`"),
            Self::ArrayType(key) => write!(f, "the element type of metadata array `{key}`"),
            Self::Array(key) => write!(f, "the length of metadata array `{key}`"),
            Self::TensorName(i) => write!(f, "the name of tensor {i}"),
            Self::Tensor(name, field) => write!(f, "the {field} of tensor `{name}`"),
        }
    }
}

/// A position in the input; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn offset(&self) -> u64 {
        u64::try_from(self.pos).unwrap_or(u64::MAX)
    }

    fn len(&self) -> u64 {
        u64::try_from(self.bytes.len()).unwrap_or(u64::MAX)
    }

    fn remaining(&self) -> u64 {
        self.len().saturating_sub(self.offset())
    }

    fn take(&mut self, n: u64, what: What<'_>) -> Result<&'a [u8], GgufError> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| Some(self.pos..self.pos.checked_add(n)?))
            .and_then(|range| Some((range.end, self.bytes.get(range)?)));
        match slice {
            Some((end, s)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                offset: self.offset(),
                what: what.to_string(),
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self, what: What<'_>) -> Result<u8, GgufError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: What<'_>) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: What<'_>) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u64 count of items of at least `min_each` bytes, refused if the rest of the input
    /// could not hold that many (so callers may allocate `count` items).
    fn count(&mut self, what: What<'_>, min_each: u64) -> Result<u64, GgufError> {
        let offset = self.offset();
        let count = self.u64(what)?;
        let remaining = self.remaining();
        if count
            .checked_mul(min_each)
            .is_none_or(|need| need > remaining)
        {
            return Err(GgufError::CountTooLarge {
                what: what.to_string(),
                count,
                offset,
                remaining,
                min_each,
            });
        }
        Ok(count)
    }

    /// A u64 length and that many bytes of UTF-8.
    fn string(&mut self, what: What<'_>) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what.to_string(),
                offset,
            }),
        }
    }
}

/// The bytes a [`GgufFile`] reads: a read-only map of the file, or a buffer.
enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// A validated GGUF file. Tensor data is borrowed straight from the memory map: weights are
/// never copied, and their pages are shared with the page cache and other processes.
pub struct GgufFile {
    backing: Backing,
    layout: GgufLayout,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("mapped", &matches!(self.backing, Backing::Mapped(_)))
            .field("version", &self.layout.version)
            .field("file_size", &self.layout.file_size)
            .field("metadata_entries", &self.layout.metadata.len())
            .field("tensors", &self.layout.tensors.len())
            .finish()
    }
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the map is read-only and lives in `GgufFile` no longer than the `Mmap` does, so
    // every slice handed out borrows memory that stays mapped. The remaining hazard is outside
    // this process: if the file is truncated or rewritten while mapped, reads see the change or
    // fault (SIGBUS). Like llama.cpp, we assume model files are not modified while in use;
    // doing so is undefined behaviour and callers must not do it (write a new file and rename
    // it over the old one instead, as `GgufWriter::write_file` does).
    unsafe { Mmap::map(file) }
}

impl GgufFile {
    /// Maps and validates the file at `path`. Errors name the path.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |op: &'static str| {
            move |source| GgufError::Io {
                path: path.to_owned(),
                op,
                source,
            }
        };
        let file = File::open(path).map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        // An empty file cannot be mapped on every platform; it is not a GGUF file either way.
        let backing = if len == 0 {
            Backing::Owned(Vec::new())
        } else {
            Backing::Mapped(map_read_only(&file).map_err(io("map"))?)
        };
        let layout = parse(backing.bytes()).map_err(|e| GgufError::InFile {
            path: PathBuf::from(path),
            source: Box::new(e),
        })?;
        Ok(Self { backing, layout })
    }

    /// Validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let layout = parse(&bytes)?;
        Ok(Self {
            backing: Backing::Owned(bytes),
            layout,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.layout.version
    }

    /// The alignment of tensor data, in bytes.
    pub fn alignment(&self) -> u64 {
        self.layout.alignment
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.layout.metadata
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.layout.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.layout.tensor(name)
    }

    /// The data of `t`, one of this file's tensors (validated when the file was opened).
    ///
    /// A `TensorInfo` that does not belong to this file and does not fit in it gives an empty
    /// slice rather than a panic.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.layout
            .data_range(t)
            .and_then(|range| self.backing.bytes().get(range))
            .unwrap_or(&[])
    }

    /// Tells the kernel this process no longer needs `t`'s pages (a model that keeps its own
    /// interleaved copy of a matrix): they leave the resident set, and a later read of the
    /// tensor pages them back in from the file, unchanged. Nothing for a file held in memory.
    pub fn release_pages(&self, t: &TensorInfo) {
        let (Backing::Mapped(map), Some(range)) = (&self.backing, self.layout.data_range(t)) else {
            return;
        };
        const PAGE: usize = 4096;
        let start = range.start.next_multiple_of(PAGE);
        let end = range.end / PAGE * PAGE;
        if end > start {
            // SAFETY: a private read-only file mapping: MADV_DONTNEED drops pages this process
            // only reads, and the next access maps the file's (unchanged) contents again, so
            // no slice borrowed from the map sees different bytes. Whole pages inside the
            // tensor only; a failure just leaves the pages resident.
            #[allow(unsafe_code)]
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    /// The data of the tensor called `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    /// The size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.layout.file_size
    }

    /// Where the data section starts, from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.layout.data_offset
    }

    /// Everything parsed from the file but its bytes.
    pub fn layout(&self) -> &GgufLayout {
        &self.layout
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.backing.bytes()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    /// Hand-assembles GGUF bytes, valid or not.
    #[derive(Default)]
    struct Raw(Vec<u8>);

    impl Raw {
        fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
            let mut r = Self::default();
            r.0.extend_from_slice(b"GGUF");
            r.u32(version).u64(n_tensors).u64(n_kv);
            r
        }
        fn u8(&mut self, v: u8) -> &mut Self {
            self.0.push(v);
            self
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
            self.str(key).u32(4).u32(v)
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
            self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(ty).u64(offset)
        }
        /// Pads to 32 and appends `n` data bytes.
        fn data(&mut self, n: usize) -> &mut Self {
            while !self.0.len().is_multiple_of(32) {
                self.0.push(0);
            }
            self.0.extend((0..n).map(|i| i as u8));
            self
        }
        fn parse(&self) -> Result<GgufLayout, GgufError> {
            parse(&self.0)
        }
    }

    /// A small valid file: two metadata entries (one an array), two tensors, the last ending
    /// exactly at the end of the file (so every truncation removes something needed).
    pub(crate) fn small_file() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", Value::from("llama"));
        w.add_kv("a.list", Value::Array(vec![Value::I32(-1), Value::I32(7)]));
        w.add_tensor("q", &[32, 2], GgmlType::Q8_0, vec![3; 68])
            .unwrap();
        w.add_tensor("f", &[8], GgmlType::F32, vec![5; 32]).unwrap();
        w.to_bytes().unwrap()
    }

    /// xorshift64: reproducible noise without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Parses `bytes` and, if they are valid, uses everything a loader would use.
    fn exercise(bytes: Vec<u8>) -> bool {
        let Ok(file) = GgufFile::from_bytes(bytes) else {
            return false;
        };
        let mut total = 0usize;
        for t in file.tensors() {
            let data = file.tensor_data(t);
            assert_eq!(data.len(), t.n_bytes);
            assert_eq!(t.offset % file.alignment(), 0);
            assert!(file.tensor(&t.name).is_some());
            total += data.len() + t.row_len() % 7 + t.n_rows() % 7 + (t.n_elements() % 7) as usize;
        }
        let m = file.metadata();
        for (k, _) in m.iter() {
            let _ = (
                m.get_str(k),
                m.get_u64(k),
                m.get_u32(k),
                m.get_i64(k),
                m.get_f32(k),
            );
            let _ = (
                m.get_bool(k),
                m.get_str_array(k),
                m.get_f32_array(k),
                m.get_i32_array(k),
            );
        }
        total < usize::MAX
    }

    #[test]
    fn small_file_parses() {
        let bytes = small_file();
        let layout = parse(&bytes).unwrap();
        assert_eq!(layout.version(), 3);
        assert_eq!(layout.alignment(), 32);
        assert_eq!(layout.data_offset() % 32, 0);
        let f = layout.tensor("f").unwrap();
        assert_eq!(layout.data_offset() + f.offset + 32, bytes.len() as u64);
        assert!(exercise(bytes));
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let bytes = small_file();
        for len in 0..bytes.len() {
            let result = parse(&bytes[..len]);
            assert!(result.is_err(), "truncated to {len} bytes parsed");
        }
        // The errors say where: a cut inside the metadata is reported there.
        let cut = 60;
        let err = parse(&bytes[..cut]).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("value of metadata `general.architecture`"),
            "{err}"
        );
        // A cut in the tensor data is a tensor out of bounds.
        let err = parse(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(
            matches!(err, GgufError::TensorOutOfBounds { ref tensor, .. } if tensor == "f"),
            "{err}"
        );
    }

    #[test]
    fn random_corruption_never_panics() {
        let base = small_file();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
                if rng.below(4) == 0 {
                    bytes[i] = rng.next() as u8;
                }
            }
            if rng.below(8) == 0 {
                bytes.truncate(rng.below(bytes.len()));
            }
            parsed += usize::from(exercise(bytes));
        }
        // Flips in tensor data and in string contents still parse.
        assert!(parsed > 0);
        // Pure noise after a valid magic and version.
        for _ in 0..5_000 {
            let mut bytes = b"GGUF\x03\0\0\0".to_vec();
            let n = rng.below(200);
            bytes.extend((0..n).map(|_| {
                let b = rng.next() as u8;
                // Keep small numbers common so counts and types are often plausible.
                if b & 0x80 != 0 { 0 } else { b & 0x0f }
            }));
            exercise(bytes);
        }
    }

    #[test]
    fn bad_magic() {
        let err = parse(b"GGML\x03\0\0\0").unwrap_err();
        assert!(
            matches!(err, GgufError::BadMagic { ref found } if found == b"GGML"),
            "{err}"
        );
        assert!(matches!(
            parse(b"XY").unwrap_err(),
            GgufError::BadMagic { .. }
        ));
        assert!(matches!(
            parse(b"GG").unwrap_err(),
            GgufError::Truncated { .. }
        ));
        assert!(matches!(
            parse(b"").unwrap_err(),
            GgufError::Truncated { offset: 0, .. }
        ));
    }

    #[test]
    fn version_1_and_others_are_refused() {
        let err = Raw::header(1, 0, 0).parse().unwrap_err();
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: 1 }),
            "{err}"
        );
        assert!(err.to_string().contains("obsolete"), "{err}");
        let err = Raw::header(4, 0, 0).parse().unwrap_err();
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: 4 }),
            "{err}"
        );
        let err = Raw::header(3u32.swap_bytes(), 0, 0).parse().unwrap_err();
        assert!(err.to_string().contains("big-endian"), "{err}");
    }

    #[test]
    fn version_2_is_accepted() {
        let mut raw = Raw::header(2, 1, 1);
        raw.kv_u32("k", 5).tensor("t", &[4], 0, 0).data(16);
        let layout = raw.parse().unwrap();
        assert_eq!(layout.version(), 2);
        assert_eq!(layout.metadata().get_u32("k").unwrap(), Some(5));
        assert_eq!(layout.tensor("t").unwrap().n_bytes, 16);
    }

    #[test]
    fn file_without_tensors_may_omit_padding() {
        let mut raw = Raw::header(3, 0, 1);
        raw.kv_u32("k", 5);
        let layout = raw.parse().unwrap();
        assert!(layout.tensors().is_empty());
        assert!(layout.data_offset() >= raw.0.len() as u64);
    }

    #[test]
    fn unknown_tensor_type() {
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("blk.0.weird", &[32], 99, 0).data(64);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::UnknownTensorType { ref tensor, type_id: 99 } if tensor == "blk.0.weird"),
            "{err}"
        );
    }

    #[test]
    fn tensor_out_of_bounds() {
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("t", &[16], 0, 0).data(63);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::TensorOutOfBounds { ref tensor, offset: 0, n_bytes: 64, data_len: 63 } if tensor == "t"),
            "{err}"
        );
        // An offset so large that offset + size overflows.
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("t", &[16], 0, u64::MAX - 31).data(64);
        assert!(matches!(
            raw.parse().unwrap_err(),
            GgufError::TensorOutOfBounds { .. }
        ));
    }

    #[test]
    fn misaligned_offset() {
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("t", &[4], 0, 16).data(64);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::MisalignedOffset { ref tensor, offset: 16, alignment: 32 } if tensor == "t"),
            "{err}"
        );
    }

    #[test]
    fn dims_not_a_multiple_of_the_block_length() {
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("t", &[33, 2], 2, 0).data(64);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::RowNotBlockMultiple { ref tensor, ty: GgmlType::Q4_0, row_len: 33, block_len: 32 } if tensor == "t"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_tensor() {
        let mut raw = Raw::header(3, 2, 0);
        raw.tensor("t", &[8], 0, 0)
            .tensor("t", &[8], 0, 32)
            .data(64);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::DuplicateTensor { ref name } if name == "t"),
            "{err}"
        );
    }

    #[test]
    fn overlapping_tensors() {
        let mut raw = Raw::header(3, 3, 0);
        raw.tensor("a", &[16], 0, 0)
            .tensor("b", &[4], 0, 64)
            .tensor("c", &[16], 0, 96);
        raw.data(256);
        assert!(raw.parse().is_ok());
        let mut raw = Raw::header(3, 2, 0);
        raw.tensor("a", &[16], 0, 32)
            .tensor("b", &[16], 0, 64)
            .data(256);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::OverlappingTensors { ref first, ref second } if first == "a" && second == "b"),
            "{err}"
        );
        // Empty tensors overlap nothing.
        let mut raw = Raw::header(3, 2, 0);
        raw.tensor("a", &[16], 0, 0)
            .tensor("empty", &[16, 0], 0, 32)
            .data(64);
        assert!(raw.parse().is_ok());
    }

    #[test]
    fn too_many_dims_and_overflowing_sizes() {
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(4);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::TooManyDims { n_dims: 5, .. }),
            "{err}"
        );
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("t", &[1 << 32, 1 << 32], 0, 0).data(4);
        assert!(matches!(
            raw.parse().unwrap_err(),
            GgufError::TensorTooLarge { .. }
        ));
        let mut raw = Raw::header(3, 1, 0);
        raw.tensor("t", &[1 << 62, 1], 0, 0).data(4);
        assert!(matches!(
            raw.parse().unwrap_err(),
            GgufError::TensorTooLarge { .. }
        ));
        // A huge dimension count is refused before it is used.
        let mut raw = Raw::header(3, 1, 0);
        raw.str("t").u32(u32::MAX).u64(0).u64(0);
        assert!(matches!(
            raw.parse().unwrap_err(),
            GgufError::TooManyDims { .. }
        ));
    }

    #[test]
    fn metadata_errors() {
        let mut raw = Raw::header(3, 0, 2);
        raw.kv_u32("k", 1).kv_u32("k", 2);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::DuplicateKey { ref key } if key == "k"),
            "{err}"
        );

        let mut raw = Raw::header(3, 0, 1);
        raw.str("k").u32(13).u32(0);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::UnknownValueType { type_id: 13, .. }),
            "{err}"
        );

        let mut raw = Raw::header(3, 0, 1);
        raw.str("arr").u32(9).u32(77).u64(0);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::UnknownValueType { ref key, type_id: 77, .. } if key == "arr"),
            "{err}"
        );

        let mut raw = Raw::header(3, 0, 1);
        raw.str("b").u32(7).u8(2);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::InvalidBool { byte: 2, .. }),
            "{err}"
        );

        let mut raw = Raw::header(3, 0, 1);
        raw.u64(2).u8(0xff).u8(0xfe).u32(4).u32(0);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::InvalidUtf8 { offset: 32, .. }),
            "{err}"
        );
    }

    #[test]
    fn absurd_counts_are_refused_before_allocating() {
        let err = Raw::header(3, 0, u64::MAX).parse().unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::CountTooLarge {
                    count: u64::MAX,
                    ..
                }
            ),
            "{err}"
        );
        let err = Raw::header(3, 1 << 40, 0).parse().unwrap_err();
        assert!(matches!(err, GgufError::CountTooLarge { .. }), "{err}");

        let mut raw = Raw::header(3, 0, 1);
        raw.str("arr").u32(9).u32(8).u64(1 << 60).u64(0);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::CountTooLarge { count, min_each: 8, .. } if count == 1 << 60),
            "{err}"
        );

        let mut raw = Raw::header(3, 0, 1);
        raw.u64(u64::MAX).u32(0).u8(0);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::Truncated {
                    offset: 32,
                    needed: u64::MAX,
                    available: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut raw = Raw::header(3, 0, 1);
        raw.str("deep");
        raw.u32(9);
        for _ in 0..MAX_ARRAY_DEPTH + 1 {
            raw.u32(9).u64(1);
        }
        let err = raw.parse().unwrap_err();
        assert!(matches!(err, GgufError::NestingTooDeep { .. }), "{err}");
    }

    #[test]
    fn alignment_from_metadata() {
        for (bad, what) in [(0u32, "0"), (48, "48")] {
            let mut raw = Raw::header(3, 0, 1);
            raw.kv_u32(ALIGNMENT_KEY, bad);
            let err = raw.parse().unwrap_err();
            assert!(
                matches!(err, GgufError::BadAlignment { ref found } if found.contains(what)),
                "{err}"
            );
        }
        let mut raw = Raw::header(3, 0, 1);
        raw.str(ALIGNMENT_KEY).u32(10).u64(64);
        let err = raw.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::BadAlignment { ref found } if found == "u64 64"),
            "{err}"
        );

        let mut raw = Raw::header(3, 1, 1);
        raw.kv_u32(ALIGNMENT_KEY, 16).tensor("t", &[4], 0, 16);
        while !raw.0.len().is_multiple_of(16) {
            raw.0.push(0);
        }
        raw.0.extend([0; 32]);
        let layout = raw.parse().unwrap();
        assert_eq!(layout.alignment(), 16);
        assert_eq!(layout.data_offset() % 16, 0);
    }

    #[test]
    fn open_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.gguf");
        let err = GgufFile::open(&missing).unwrap_err();
        assert!(matches!(err, GgufError::Io { op: "open", .. }), "{err}");
        assert!(err.to_string().contains("missing.gguf"), "{err}");

        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, b"GGUF\x01\0\0\0").unwrap();
        let err = GgufFile::open(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.gguf"), "{err}");
        assert!(matches!(
            err.innermost(),
            GgufError::UnsupportedVersion { version: 1 }
        ));

        let empty = dir.path().join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        let err = GgufFile::open(&empty).unwrap_err();
        assert!(
            matches!(err.innermost(), GgufError::Truncated { offset: 0, .. }),
            "{err}"
        );

        let good = dir.path().join("good.gguf");
        let bytes = small_file();
        std::fs::write(&good, &bytes).unwrap();
        let file = GgufFile::open(&good).unwrap();
        assert_eq!(file.file_size(), bytes.len() as u64);
        assert_eq!(file.as_bytes(), &bytes[..]);
        assert_eq!(file.tensor_bytes("f"), Some(&[5u8; 32][..]));
    }

    #[test]
    fn foreign_tensor_info_gives_an_empty_slice() {
        let file = GgufFile::from_bytes(small_file()).unwrap();
        let mut t = file.tensor("f").unwrap().clone();
        t.offset = u64::MAX;
        assert!(file.tensor_data(&t).is_empty());
        t.offset = 0;
        t.n_bytes = usize::MAX;
        assert!(file.tensor_data(&t).is_empty());
    }

    /// The SmolLM2 model fedtune's examples use, if it has been downloaded.
    pub(crate) fn smollm2_path() -> Option<PathBuf> {
        let home = std::env::var_os("HOME")?;
        let path =
            PathBuf::from(home).join(".cache/fedtune/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if path.exists() {
            Some(path)
        } else {
            eprintln!("skipping: {} not present", path.display());
            None
        }
    }

    #[test]
    fn real_smollm2_file() {
        let Some(path) = smollm2_path() else { return };
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.version(), 3);
        assert_eq!(file.tensors().len(), 272);
        let m = file.metadata();
        assert_eq!(m.get_str("general.architecture").unwrap(), Some("llama"));
        assert_eq!(m.get_u32("llama.block_count").unwrap(), Some(30));
        let tokens = m.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
        assert_eq!(tokens.len(), 49152);
        let emb = file.tensor("token_embd.weight").unwrap();
        assert_eq!(emb.ty, GgmlType::Q8_0);
        assert_eq!(emb.dims, [576, 49152]);
        assert_eq!(emb.row_len(), 576);
        assert_eq!(emb.n_rows(), 49152);
        assert_eq!(emb.n_elements(), 576 * 49152);
        assert_eq!(file.tensor_data(emb).len(), 49152 * 576 / 32 * 34);
        let data_end = file
            .tensors()
            .iter()
            .map(|t| file.data_offset() + t.offset + t.n_bytes as u64);
        assert!(data_end.max().unwrap() <= file.file_size());
        assert!(exercise(std::fs::read(&path).unwrap()));
    }
}
