//! The fixed header: magic, version, tensor and metadata counts.

use super::cursor::{Reader, What};
use super::metadata::MIN_KV_BYTES;
use super::{GgufError, MAGIC};

/// What the header says.
pub(super) struct Header {
    pub version: u32,
    /// Checked against the input once the metadata has been read.
    pub tensor_count: u64,
    /// Where the tensor count is, for its error message.
    pub tensor_count_offset: u64,
    pub kv_count: u64,
}

pub(super) fn read_header(r: &mut Reader<'_>) -> Result<Header, GgufError> {
    let bytes = r.bytes();
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
    let tensor_count_offset = r.offset();
    let tensor_count = r.u64(What::Header("tensor count"))?;
    let kv_count = r.count(What::Header("metadata entry count"), MIN_KV_BYTES)?;
    Ok(Header {
        version,
        tensor_count,
        tensor_count_offset,
        kv_count,
    })
}
