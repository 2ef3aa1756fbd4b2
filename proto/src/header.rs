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
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of raw little-endian data.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
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
        if s.len() != 32 {
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
        let arr: [u8; 16] = b.try_into().map_err(|_| CodecError::DigestLength(b.len()))?;
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
        let overflow = || CodecError::ShapeOverflow { name: s.name.clone(), shape: s.shape.clone() };
        let numel = s.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        let bytes = numel.checked_mul(dtype.size() as u64).ok_or_else(overflow)?;
        total = total.checked_add(bytes).ok_or_else(overflow)?;
        if total > max_bytes {
            return Err(CodecError::TooLarge { bytes: total, limit: max_bytes });
        }
        let shape = s.shape.iter().map(|&d| usize::try_from(d).map_err(|_| overflow())).collect::<Result<_, _>>()?;
        out.push(TensorSpec { name: s.name.clone(), dtype, shape });
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
            return Err(CodecError::TooLarge { bytes: info.encoded_bytes, limit: max_bytes });
        }
        let header = BundleHeader {
            manifest,
            compression,
            encoded_bytes: info.encoded_bytes,
            digest: Digest::try_from(info.digest.as_ref())?,
        };
        if compression == Compression::None && header.encoded_bytes != header.raw_bytes() {
            return Err(CodecError::PayloadSize { expected: header.raw_bytes(), got: header.encoded_bytes });
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
