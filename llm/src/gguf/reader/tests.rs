//! Tests of the GGUF reader: valid files, truncation at every byte, corrupted files.

use std::path::PathBuf;

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
    let path = PathBuf::from(home).join(".cache/fedtune/models/SmolLM2-135M-Instruct.Q4_1.gguf");
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
