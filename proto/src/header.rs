//! Domain types for what describes a bundle on the wire, with validating conversions
//! from and to the protobuf messages.

use std::collections::HashSet;

use crate::{CodecError, DType, v1};

/// Name, element type and shape of one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of elements (product of the shape; 1 for a scalar). Saturates on overflow,
    /// which no real buffer can match.
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Bytes of raw little-endian data (saturating, like [`TensorSpec::numel`]).
    pub fn byte_len(&self) -> usize {
        self.numel().saturating_mul(self.dtype.size())
    }
}

/// How a bundle's payload is compressed in transit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

/// An XXH3-128 digest (big-endian bytes, as `xxhsum -H2` prints it). It guards transfers and
/// checkpoints against truncation and corruption; authenticity is the transport's job (TLS).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 16]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(twox_hash::XxHash3_128::oneshot(bytes).to_be_bytes())
    }

    /// An incremental digest.
    pub(crate) fn hasher() -> twox_hash::XxHash3_128 {
        twox_hash::XxHash3_128::new()
    }

    pub(crate) fn finish(h: &twox_hash::XxHash3_128) -> Self {
        Digest(h.finish_128().to_be_bytes())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Digest(out))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl TryFrom<&[u8]> for Digest {
    type Error = CodecError;
    fn try_from(b: &[u8]) -> Result<Self, CodecError> {
        let arr: [u8; 16] = b
            .try_into()
            .map_err(|_| CodecError::DigestLength(b.len()))?;
        Ok(Digest(arr))
    }
}

/// Everything a receiver must know before the first byte of a bundle arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleHeader {
    pub manifest: Vec<TensorSpec>,
    pub compression: Compression,
    /// Payload length as transferred (after compression).
    pub encoded_bytes: u64,
    pub digest: Digest,
}

impl BundleHeader {
    /// Bytes of the decompressed payload: the sum of the tensors' raw sizes.
    pub fn raw_bytes(&self) -> u64 {
        self.manifest.iter().map(|t| t.byte_len() as u64).sum()
    }
}

/// Checks a manifest from the wire: non-empty unique names, shapes whose byte size fits in
/// `max_bytes`. Returns the validated specs.
pub(crate) fn manifest_from_wire(
    specs: &[v1::TensorSpec],
    max_bytes: u64,
) -> Result<Vec<TensorSpec>, CodecError> {
    let mut seen = HashSet::with_capacity(specs.len());
    let mut total: u64 = 0;
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        if s.name.is_empty() {
            return Err(CodecError::EmptyName);
        }
        if !seen.insert(s.name.as_str()) {
            return Err(CodecError::DuplicateName(s.name.clone()));
        }
        let dtype = DType::try_from(s.dtype)?;
        let overflow = || CodecError::ShapeOverflow {
            name: s.name.clone(),
            shape: s.shape.clone(),
        };
        let numel = s
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        let bytes = numel
            .checked_mul(dtype.size() as u64)
            .ok_or_else(overflow)?;
        total = total.checked_add(bytes).ok_or_else(overflow)?;
        if total > max_bytes {
            return Err(CodecError::TooLarge {
                bytes: total,
                limit: max_bytes,
            });
        }
        let shape = s
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| overflow()))
            .collect::<Result<_, _>>()?;
        out.push(TensorSpec {
            name: s.name.clone(),
            dtype,
            shape,
        });
    }
    Ok(out)
}

impl BundleHeader {
    /// Validates a wire header; `max_bytes` bounds both the raw and the encoded size.
    pub fn from_wire(info: &v1::BundleInfo, max_bytes: u64) -> Result<Self, CodecError> {
        let manifest = manifest_from_wire(&info.manifest, max_bytes)?;
        let compression = match v1::Compression::try_from(info.compression) {
            Ok(v1::Compression::None) => Compression::None,
            Ok(v1::Compression::Zstd) => Compression::Zstd,
            Err(_) => return Err(CodecError::UnknownCompression(info.compression)),
        };
        if info.encoded_bytes > max_bytes {
            return Err(CodecError::TooLarge {
                bytes: info.encoded_bytes,
                limit: max_bytes,
            });
        }
        let header = BundleHeader {
            manifest,
            compression,
            encoded_bytes: info.encoded_bytes,
            digest: Digest::try_from(info.digest.as_ref())?,
        };
        if compression == Compression::None && header.encoded_bytes != header.raw_bytes() {
            return Err(CodecError::PayloadSize {
                expected: header.raw_bytes(),
                got: header.encoded_bytes,
            });
        }
        Ok(header)
    }

    pub fn to_wire(&self) -> v1::BundleInfo {
        v1::BundleInfo {
            manifest: self
                .manifest
                .iter()
                .map(|t| v1::TensorSpec {
                    name: t.name.clone(),
                    dtype: v1::DType::from(t.dtype) as i32,
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                })
                .collect(),
            compression: match self.compression {
                Compression::None => v1::Compression::None as i32,
                Compression::Zstd => v1::Compression::Zstd as i32,
            },
            encoded_bytes: self.encoded_bytes,
            digest: bytes::Bytes::copy_from_slice(&self.digest.0),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMIT: u64 = 1 << 20;

    fn spec(name: &str, dtype: v1::DType, shape: &[u64]) -> v1::TensorSpec {
        v1::TensorSpec {
            name: name.to_string(),
            dtype: dtype as i32,
            shape: shape.to_vec(),
        }
    }

    /// A valid uncompressed header: 2*3 f32 (24 bytes) + 5 f16 (10 bytes) + a bf16 scalar (2 bytes).
    fn valid_info() -> v1::BundleInfo {
        v1::BundleInfo {
            manifest: vec![
                spec("a", v1::DType::DtypeF32, &[2, 3]),
                spec("b", v1::DType::DtypeF16, &[5]),
                spec("c", v1::DType::DtypeBf16, &[]),
            ],
            compression: v1::Compression::None as i32,
            encoded_bytes: 36,
            digest: bytes::Bytes::from_static(&[7u8; 16]),
        }
    }

    fn err(info: &v1::BundleInfo, limit: u64) -> CodecError {
        BundleHeader::from_wire(info, limit).expect_err("header must be refused")
    }

    #[test]
    fn valid_header_is_accepted_and_round_trips() {
        let info = valid_info();
        let h = BundleHeader::from_wire(&info, LIMIT).unwrap();
        assert_eq!(h.compression, Compression::None);
        assert_eq!(h.encoded_bytes, 36);
        assert_eq!(h.raw_bytes(), 36);
        assert_eq!(h.digest, Digest([7; 16]));
        assert_eq!(
            h.manifest,
            vec![
                TensorSpec {
                    name: "a".into(),
                    dtype: DType::F32,
                    shape: vec![2, 3]
                },
                TensorSpec {
                    name: "b".into(),
                    dtype: DType::F16,
                    shape: vec![5]
                },
                TensorSpec {
                    name: "c".into(),
                    dtype: DType::BF16,
                    shape: vec![]
                },
            ]
        );
        assert_eq!(h.manifest[0].numel(), 6);
        assert_eq!(h.manifest[0].byte_len(), 24);
        assert_eq!(h.manifest[2].numel(), 1, "a scalar holds one element");
        assert_eq!(h.to_wire(), info);
        assert_eq!(BundleHeader::from_wire(&h.to_wire(), LIMIT).unwrap(), h);
    }

    #[test]
    fn zstd_header_may_differ_in_encoded_size() {
        let mut info = valid_info();
        info.compression = v1::Compression::Zstd as i32;
        info.encoded_bytes = 5;
        let h = BundleHeader::from_wire(&info, LIMIT).unwrap();
        assert_eq!(h.compression, Compression::Zstd);
        assert_eq!(h.encoded_bytes, 5);
        assert_eq!(h.raw_bytes(), 36);
    }

    #[test]
    fn empty_manifest_is_accepted() {
        let info = v1::BundleInfo {
            manifest: vec![],
            compression: 0,
            encoded_bytes: 0,
            digest: bytes::Bytes::from_static(&[0u8; 16]),
        };
        let h = BundleHeader::from_wire(&info, LIMIT).unwrap();
        assert!(h.manifest.is_empty());
        assert_eq!(h.raw_bytes(), 0);
    }

    #[test]
    fn duplicate_name_is_refused() {
        let mut info = valid_info();
        info.manifest[2].name = "a".into();
        assert!(matches!(err(&info, LIMIT), CodecError::DuplicateName(n) if n == "a"));
    }

    #[test]
    fn empty_name_is_refused() {
        let mut info = valid_info();
        info.manifest[1].name.clear();
        assert!(matches!(err(&info, LIMIT), CodecError::EmptyName));
    }

    #[test]
    fn unknown_dtype_is_refused() {
        for code in [0, 5, -1, i32::MAX, i32::MIN] {
            let mut info = valid_info();
            info.manifest[1].dtype = code;
            assert!(
                matches!(err(&info, LIMIT), CodecError::UnknownDType(c) if c == code),
                "code {code}"
            );
        }
    }

    #[test]
    fn unknown_compression_is_refused() {
        for code in [2, -1, i32::MAX, i32::MIN] {
            let mut info = valid_info();
            info.compression = code;
            assert!(
                matches!(err(&info, LIMIT), CodecError::UnknownCompression(c) if c == code),
                "code {code}"
            );
        }
    }

    #[test]
    fn overflowing_shapes_are_refused() {
        let cases: &[(&[u64], v1::DType)] = &[
            (&[u64::MAX, 2], v1::DType::DtypeF32),
            (&[1 << 32, 1 << 32], v1::DType::DtypeF16),
            (&[2, 3, u64::MAX], v1::DType::DtypeBf16),
            // the element count fits, the byte count does not
            (&[1 << 62], v1::DType::DtypeF32),
            (&[1 << 63], v1::DType::DtypeF16),
        ];
        for &(shape, dtype) in cases {
            let mut info = valid_info();
            info.manifest[1] = spec("big", dtype, shape);
            match err(&info, u64::MAX) {
                CodecError::ShapeOverflow { name, shape: s } => {
                    assert_eq!(name, "big");
                    assert_eq!(s, shape);
                }
                e => panic!("shape {shape:?}: expected ShapeOverflow, got {e:?}"),
            }
        }
    }

    #[test]
    fn total_overflow_is_refused() {
        // Each tensor is 2^63 bytes: fine alone (limit u64::MAX), the sum overflows.
        let info = v1::BundleInfo {
            manifest: vec![
                spec("x", v1::DType::DtypeF32, &[1 << 61]),
                spec("y", v1::DType::DtypeF32, &[1 << 61]),
            ],
            compression: v1::Compression::Zstd as i32,
            encoded_bytes: 1,
            digest: bytes::Bytes::from_static(&[0u8; 16]),
        };
        assert!(
            matches!(err(&info, u64::MAX), CodecError::ShapeOverflow { name, .. } if name == "y")
        );
    }

    #[test]
    fn too_large_bundle_is_refused() {
        let info = valid_info();
        assert!(
            BundleHeader::from_wire(&info, 36).is_ok(),
            "exactly at the limit is fine"
        );
        match err(&info, 35) {
            CodecError::TooLarge { bytes, limit } => {
                assert_eq!(bytes, 36);
                assert_eq!(limit, 35);
            }
            e => panic!("expected TooLarge, got {e:?}"),
        }
        // the limit applies to the running total, before the later tensors are read
        let mut info = valid_info();
        info.manifest
            .insert(0, spec("huge", v1::DType::DtypeF32, &[LIMIT]));
        assert!(
            matches!(err(&info, LIMIT), CodecError::TooLarge { bytes, limit: LIMIT } if bytes == 4 * LIMIT)
        );
    }

    #[test]
    fn too_large_encoded_size_is_refused() {
        let mut info = valid_info();
        info.compression = v1::Compression::Zstd as i32;
        info.encoded_bytes = LIMIT + 1;
        assert!(matches!(
            err(&info, LIMIT),
            CodecError::TooLarge { bytes, limit: LIMIT } if bytes == LIMIT + 1
        ));
        info.encoded_bytes = LIMIT;
        assert!(BundleHeader::from_wire(&info, LIMIT).is_ok());
    }

    #[test]
    fn uncompressed_size_mismatch_is_refused() {
        for encoded in [0, 35, 37, LIMIT] {
            let mut info = valid_info();
            info.encoded_bytes = encoded;
            assert!(
                matches!(err(&info, LIMIT), CodecError::PayloadSize { expected: 36, got } if got == encoded),
                "encoded_bytes {encoded}"
            );
        }
    }

    #[test]
    fn digest_of_wrong_length_is_refused() {
        for len in [0usize, 1, 15, 17, 32] {
            let mut info = valid_info();
            info.digest = bytes::Bytes::from(vec![1u8; len]);
            assert!(
                matches!(err(&info, LIMIT), CodecError::DigestLength(l) if l == len),
                "len {len}"
            );
        }
    }

    #[test]
    fn digest_try_from_checks_length() {
        let bytes: Vec<u8> = (0..17).collect();
        for len in [0usize, 15, 17] {
            assert!(
                matches!(Digest::try_from(&bytes[..len]), Err(CodecError::DigestLength(l)) if l == len)
            );
        }
        let d = Digest::try_from(&bytes[..16]).unwrap();
        assert_eq!(d.0.to_vec(), bytes[..16].to_vec());
    }

    #[test]
    fn digest_is_xxh3_128_big_endian() {
        // `xxhsum -H2 /dev/null`
        assert_eq!(Digest::of(b"").to_hex(), "99aa06d3014798d86001c324468d497f");
        // the incremental hasher agrees with the one-shot digest
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut h = Digest::hasher();
        for part in data.chunks(333) {
            h.write(part);
        }
        assert_eq!(Digest::finish(&h), Digest::of(&data));
        assert_ne!(Digest::of(&data), Digest::of(&data[1..]));
    }

    #[test]
    fn digest_hex_round_trip() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x4845_5821);
        for _ in 0..200 {
            let d = Digest(rng.random());
            let hex = d.to_hex();
            assert_eq!(hex.len(), 32);
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{hex}"
            );
            assert_eq!(Digest::from_hex(&hex), Some(d));
            assert_eq!(Digest::from_hex(&hex.to_uppercase()), Some(d));
        }
        let d = Digest(*b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\xfe\xff");
        assert_eq!(d.to_hex(), "000102030405060708090a0b0c0dfeff");
        assert_eq!(format!("{d:?}"), "Digest(000102030405060708090a0b0c0dfeff)");
    }

    #[test]
    fn digest_from_hex_rejects_bad_input() {
        let good = "000102030405060708090a0b0c0dfeff";
        let bad = [
            String::new(),
            good[..31].to_string(),
            format!("{good}0"),
            format!("{good}00"),
            good.replace('f', "g"),
            good.replacen('0', " ", 1),
            format!("0x{}", &good[2..]),
            // a multi-byte character: 32 bytes, but not at char boundaries
            format!("é{}", &good[2..]),
            format!("{}é", &good[..30]),
            "zz".repeat(16),
        ];
        for s in &bad {
            assert_eq!(Digest::from_hex(s), None, "{s:?} must be refused");
        }
    }

    /// `u8::from_str_radix` accepts a leading `+`; `from_hex` must not take "+f" as 0x0f.
    #[test]
    fn digest_from_hex_rejects_plus_signs() {
        assert_eq!(Digest::from_hex(&"+f".repeat(16)), None);
        assert_eq!(Digest::from_hex("+00102030405060708090a0b0c0dfeff"), None);
    }
}
