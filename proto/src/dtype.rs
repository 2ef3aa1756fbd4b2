//! Element types a tensor may travel in.

use crate::{CodecError, v1};

/// Element type of a tensor on the wire and in checkpoints (always little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Unsigned 32-bit words: secure aggregation's masked updates (integers mod 2^32), never a
    /// model's weights.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The name safetensors and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::U32 => "U32",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<i32> for DType {
    type Error = CodecError;
    fn try_from(raw: i32) -> Result<Self, CodecError> {
        match v1::DType::try_from(raw) {
            Ok(v1::DType::DtypeF32) => Ok(DType::F32),
            Ok(v1::DType::DtypeF16) => Ok(DType::F16),
            Ok(v1::DType::DtypeBf16) => Ok(DType::BF16),
            Ok(v1::DType::DtypeU32) => Ok(DType::U32),
            _ => Err(CodecError::UnknownDType(raw)),
        }
    }
}

impl From<DType> for v1::DType {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => v1::DType::DtypeF32,
            DType::F16 => v1::DType::DtypeF16,
            DType::BF16 => v1::DType::DtypeBf16,
            DType::U32 => v1::DType::DtypeU32,
        }
    }
}
