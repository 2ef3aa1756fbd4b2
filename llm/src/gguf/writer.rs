//! Writing GGUF (version 3): collect metadata and tensors, then write them in one pass.
//!
//! The layout matches what llama.cpp's and gguf-py's writers produce: metadata and tensor infos
//! in insertion order, the data section and every tensor aligned to the file's alignment, and
//! zero padding after every tensor (the last one included), so files written here load in
//! llama.cpp and re-writing a parsed file reproduces it.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, align_up, tensor_n_bytes,
};
use super::{GgufError, Metadata, Value};
use crate::atomic_file::{self, AtomicWriteError};
use crate::quant::GgmlType;

/// The version this writer produces.
pub const WRITE_VERSION: u32 = 3;

/// A tensor waiting to be written.
#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
}

/// Builds a GGUF file: add metadata and tensors, then [`write_to`](Self::write_to) or
/// [`write_file`](Self::write_file). The alignment is 32 unless `general.alignment` is set.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Metadata,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata entry. Entries are written in the order first added; setting a key
    /// again replaces its value in place.
    pub fn add_kv(&mut self, key: impl Into<String>, value: Value) {
        self.metadata.set(key.into(), value);
    }

    /// Sets `general.alignment` (must be a non-zero power of two).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        if !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment {
                found: format!("u32 {alignment}"),
            });
        }
        self.add_kv(ALIGNMENT_KEY, Value::U32(alignment));
        Ok(())
    }

    /// The metadata added so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a tensor. `dims` are in ggml order (`dims[0]` is the row length); `data` must be
    /// exactly the size those dims take in type `ty`, and `name` must be new.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let Some(type_id) = ty.id() else {
            return Err(GgufError::TypeNotStorable { tensor: name, ty });
        };
        let expected = tensor_n_bytes(&name, dims, ty)?;
        if data.len() != expected {
            return Err(GgufError::DataSizeMismatch {
                tensor: name,
                expected,
                actual: data.len(),
            });
        }
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            type_id,
            data,
        });
        Ok(())
    }

    /// The alignment the file will have: `general.alignment` if set, else 32.
    pub fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(&Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(a)),
            Some(v) => Err(GgufError::BadAlignment {
                found: format!("{} {v}", v.type_name()),
            }),
        }
    }

    /// Writes the file to `w`. Nothing is written if the metadata cannot be encoded.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        let head = self.encode_head(alignment)?;
        w.write_all(&head).map_err(GgufError::Write)?;
        for t in &self.tensors {
            w.write_all(&t.data).map_err(GgufError::Write)?;
            write_padding(w, padding(len_u64(t.data.len()), alignment)?)?;
        }
        w.flush().map_err(GgufError::Write)
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the file to `path` atomically: into a temporary file in the same directory,
    /// synced, then renamed over `path` (so a reader mapping the old file never sees a
    /// half-written one).
    pub fn write_file(&self, path: &Path) -> Result<(), GgufError> {
        atomic_file::write(path, |out| self.write_to(out)).map_err(|e| match e {
            AtomicWriteError::Io { path, op, source } => GgufError::Io { path, op, source },
            AtomicWriteError::Write(GgufError::Write(source)) => GgufError::Io {
                path: path.to_owned(),
                op: "write",
                source,
            },
            AtomicWriteError::Write(other) => other,
        })
    }

    /// Header, metadata, tensor infos and the padding up to the data section.
    fn encode_head(&self, alignment: u64) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        out.extend_from_slice(&len_u64(self.tensors.len()).to_le_bytes());
        out.extend_from_slice(&len_u64(self.metadata.len()).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_str(&mut out, key);
            out.extend_from_slice(&value.gguf_type().to_le_bytes());
            put_value(&mut out, key, value, 0)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&len_u32(t.dims.len()).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            let n = len_u64(t.data.len());
            offset = offset
                .checked_add(n)
                .and_then(|end| align_up(end, alignment))
                .ok_or_else(|| GgufError::TensorTooLarge {
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                })?;
        }
        let pad = padding(len_u64(out.len()), alignment)?;
        out.resize(
            out.len()
                .saturating_add(usize::try_from(pad).unwrap_or(usize::MAX)),
            0,
        );
        Ok(out)
    }
}

/// Lengths always fit in u64 on supported targets.
fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Dimension counts are at most 4 (checked by `add_tensor`).
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Bytes of zeros that bring `len` to a multiple of `alignment`.
fn padding(len: u64, alignment: u64) -> Result<u64, GgufError> {
    align_up(len, alignment)
        .map(|end| end - len)
        .ok_or_else(|| GgufError::BadAlignment {
            found: format!("{alignment} (padding overflows)"),
        })
}

fn write_padding(w: &mut impl Write, mut n: u64) -> Result<(), GgufError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let chunk = usize::try_from(n.min(4096)).unwrap_or(4096);
        w.write_all(ZEROS.get(..chunk).unwrap_or(&ZEROS))
            .map_err(GgufError::Write)?;
        n -= len_u64(chunk);
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&len_u64(s.len()).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of `v` (without its type number, which the caller wrote).
fn put_value(out: &mut Vec<u8>, key: &str, v: &Value, depth: usize) -> Result<(), GgufError> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(elements) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_owned(),
                    max: MAX_ARRAY_DEPTH,
                });
            }
            // An empty array needs some element type; u8 is as good as any.
            let first = elements.first();
            let elem_ty = first.map_or(0, Value::gguf_type);
            out.extend_from_slice(&elem_ty.to_le_bytes());
            out.extend_from_slice(&len_u64(elements.len()).to_le_bytes());
            for e in elements {
                if e.gguf_type() != elem_ty {
                    return Err(GgufError::MixedArray {
                        key: key.to_owned(),
                        first: first.map_or("u8", Value::type_name),
                        other: e.type_name(),
                    });
                }
                put_value(out, key, e, depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufFile, parse};

    fn every_value() -> Vec<(&'static str, Value)> {
        vec![
            ("u8", Value::U8(200)),
            ("i8", Value::I8(-100)),
            ("u16", Value::U16(60_000)),
            ("i16", Value::I16(-30_000)),
            ("u32", Value::U32(4_000_000_000)),
            ("i32", Value::I32(-2_000_000_000)),
            ("u64", Value::U64(u64::MAX)),
            ("i64", Value::I64(i64::MIN)),
            ("f32", Value::F32(-1.25e-3)),
            ("f64", Value::F64(std::f64::consts::PI)),
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("string", Value::from("héllo ✓")),
            ("empty string", Value::from("")),
            (
                "strings",
                Value::Array(vec!["a".into(), "".into(), "ß".into()]),
            ),
            (
                "floats",
                Value::Array(vec![Value::F32(0.5), Value::F32(-0.0)]),
            ),
            (
                "bools",
                Value::Array(vec![Value::Bool(false), Value::Bool(true)]),
            ),
            (
                "i64s",
                Value::Array(vec![Value::I64(-1), Value::I64(1 << 40)]),
            ),
            ("empty", Value::Array(vec![])),
            (
                "nested",
                Value::Array(vec![
                    Value::Array(vec![Value::U16(1), Value::U16(2)]),
                    Value::Array(vec![]),
                    Value::Array(vec![Value::Array(vec!["deep".into()])]),
                ]),
            ),
        ]
    }

    #[test]
    fn every_value_type_round_trips_in_order() {
        let mut w = GgufWriter::new();
        for (k, v) in every_value() {
            w.add_kv(k, v);
        }
        let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        assert_eq!(file.version(), WRITE_VERSION);
        let read: Vec<(&str, &Value)> = file.metadata().iter().collect();
        let expected = every_value();
        assert_eq!(read.len(), expected.len());
        for ((k, v), (ek, ev)) in read.iter().zip(&expected) {
            assert_eq!(k, ek);
            assert_eq!(*v, ev, "{k}");
        }
        assert_eq!(file.metadata(), w.metadata());
    }

    fn f16_bytes(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect()
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn tensors() -> Vec<(&'static str, Vec<u64>, GgmlType, Vec<u8>)> {
        let f32s: Vec<u8> = (0..15)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        vec![
            ("f32", vec![5, 3], GgmlType::F32, f32s),
            (
                "f16",
                vec![7],
                GgmlType::F16,
                f16_bytes(&[1.0, -2.0, 0.5, 3.0, 4.0, 5.0, 6.0]),
            ),
            ("q4_0", vec![64, 3], GgmlType::Q4_0, pattern(6 * 18, 1)),
            ("q8_0", vec![32, 1, 2], GgmlType::Q8_0, pattern(2 * 34, 2)),
            (
                "q4_k",
                vec![256, 2, 1, 1],
                GgmlType::Q4K,
                pattern(2 * 144, 3),
            ),
        ]
    }

    fn write_tensors(alignment: Option<u32>) -> (Vec<u8>, GgufFile) {
        let mut w = GgufWriter::new();
        w.add_kv("general.name", Value::from("t"));
        if let Some(a) = alignment {
            w.set_alignment(a).unwrap();
        }
        for (name, dims, ty, data) in tensors() {
            w.add_tensor(name, &dims, ty, data).unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        (bytes.clone(), GgufFile::from_bytes(bytes).unwrap())
    }

    fn check_layout(bytes: &[u8], file: &GgufFile, alignment: u64) {
        assert_eq!(file.alignment(), alignment);
        assert_eq!(file.data_offset() % alignment, 0);
        // Tensors are packed in order, each at the next aligned offset, with zero padding.
        let mut expected_offset = 0u64;
        for (t, (name, dims, ty, data)) in file.tensors().iter().zip(tensors()) {
            assert_eq!(t.name, name);
            assert_eq!(t.dims, dims);
            assert_eq!(t.ty, ty);
            assert_eq!(t.offset, expected_offset, "{name}");
            assert_eq!(t.offset % alignment, 0);
            assert_eq!(file.tensor_data(t), &data[..], "{name}");
            let start = (file.data_offset() + t.offset) as usize;
            let end = align_up((start + data.len()) as u64, alignment).unwrap() as usize;
            assert!(
                bytes[start + data.len()..end].iter().all(|&b| b == 0),
                "{name} padding"
            );
            expected_offset = align_up(t.offset + data.len() as u64, alignment).unwrap();
        }
        assert_eq!(bytes.len() as u64, file.data_offset() + expected_offset);
    }

    #[test]
    fn tensors_round_trip_with_default_alignment() {
        let (bytes, file) = write_tensors(None);
        assert!(file.metadata().get(ALIGNMENT_KEY).is_none());
        check_layout(&bytes, &file, 32);
        let t = file.tensor("q8_0").unwrap();
        assert_eq!((t.row_len(), t.n_rows(), t.n_elements()), (32, 2, 64));
        let f16 = file.tensor_bytes("f16").unwrap();
        assert_eq!(half::f16::from_le_bytes([f16[2], f16[3]]).to_f32(), -2.0);
    }

    #[test]
    fn custom_alignment() {
        for a in [1u32, 64, 4096] {
            let (bytes, file) = write_tensors(Some(a));
            assert_eq!(file.metadata().get_u32(ALIGNMENT_KEY).unwrap(), Some(a));
            check_layout(&bytes, &file, u64::from(a));
        }
        let mut w = GgufWriter::new();
        assert!(matches!(
            w.set_alignment(24),
            Err(GgufError::BadAlignment { .. })
        ));
        w.add_kv(ALIGNMENT_KEY, Value::U64(64));
        assert!(matches!(w.to_bytes(), Err(GgufError::BadAlignment { .. })));
    }

    #[test]
    fn add_tensor_refusals() {
        let mut w = GgufWriter::new();
        let err = w
            .add_tensor("t", &[32], GgmlType::Q8_0, vec![0; 33])
            .unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::DataSizeMismatch {
                    expected: 34,
                    actual: 33,
                    ..
                }
            ),
            "{err}"
        );
        let err = w
            .add_tensor("t", &[48], GgmlType::Q4_0, vec![])
            .unwrap_err();
        assert!(
            matches!(err, GgufError::RowNotBlockMultiple { .. }),
            "{err}"
        );
        let err = w
            .add_tensor("t", &[64], GgmlType::Nf4, vec![0; 36])
            .unwrap_err();
        assert!(matches!(err, GgufError::TypeNotStorable { .. }), "{err}");
        let err = w
            .add_tensor("t", &[1; 5], GgmlType::F32, vec![0; 4])
            .unwrap_err();
        assert!(
            matches!(err, GgufError::TooManyDims { n_dims: 5, .. }),
            "{err}"
        );
        w.add_tensor("t", &[1], GgmlType::F32, vec![0; 4]).unwrap();
        let err = w
            .add_tensor("t", &[1], GgmlType::F32, vec![0; 4])
            .unwrap_err();
        assert!(matches!(err, GgufError::DuplicateTensor { .. }), "{err}");
    }

    #[test]
    fn metadata_refusals() {
        let mut w = GgufWriter::new();
        w.add_kv("mixed", Value::Array(vec![Value::U8(1), Value::I8(1)]));
        let err = w.to_bytes().unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::MixedArray {
                    first: "u8",
                    other: "i8",
                    ..
                }
            ),
            "{err}"
        );
        let mut deep = Value::U8(0);
        for _ in 0..=MAX_ARRAY_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let mut w = GgufWriter::new();
        w.add_kv("deep", deep);
        assert!(matches!(
            w.to_bytes(),
            Err(GgufError::NestingTooDeep { .. })
        ));
        // The deepest nesting the writer allows, the reader reads.
        let mut ok = Value::U8(0);
        for _ in 0..MAX_ARRAY_DEPTH {
            ok = Value::Array(vec![ok]);
        }
        let mut w = GgufWriter::new();
        w.add_kv("deep", ok.clone());
        let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        assert_eq!(file.metadata().get("deep"), Some(&ok));
    }

    #[test]
    fn add_kv_replaces_in_place() {
        let mut w = GgufWriter::new();
        w.add_kv("a", Value::U8(1));
        w.add_kv("b", Value::U8(2));
        w.add_kv("a", Value::U8(3));
        let layout = parse(&w.to_bytes().unwrap()).unwrap();
        let entries: Vec<_> = layout
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        assert_eq!(
            entries,
            [
                ("a".to_owned(), Value::U8(3)),
                ("b".to_owned(), Value::U8(2))
            ]
        );
    }

    #[test]
    fn write_file_is_atomic_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"old contents").unwrap();
        let (bytes, _) = write_tensors(None);
        let mut w = GgufWriter::new();
        w.add_kv("general.name", Value::from("t"));
        for (name, dims, ty, data) in tensors() {
            w.add_tensor(name, &dims, ty, data).unwrap();
        }
        w.write_file(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["model.gguf"], "no temporary file left behind");
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.tensors().len(), 5);

        let err = w
            .write_file(&dir.path().join("no/such/dir/x.gguf"))
            .unwrap_err();
        assert!(matches!(err, GgufError::Io { op: "create", .. }), "{err}");
    }

    /// Re-writing a parsed llama.cpp file from its parts reproduces it byte for byte.
    #[test]
    fn real_smollm2_file_rewrites_identically() {
        let Some(path) = crate::gguf::reader::tests::smollm2_path() else {
            return;
        };
        let file = GgufFile::open(&path).unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in file.metadata().iter() {
            w.add_kv(k, v.clone());
        }
        for t in file.tensors() {
            w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())
                .unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        assert_eq!(bytes.len() as u64, file.file_size());
        assert!(bytes == file.as_bytes(), "rewritten file differs");
    }
}
