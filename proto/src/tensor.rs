//! Named tensors and bundles of them, held as little-endian bytes so they move between
//! the wire, checkpoints and trainers without conversion.

use std::borrow::Cow;

use bytes::Bytes;
use half::{bf16, f16};

use crate::{CodecError, DType, TensorSpec};

/// One named tensor: its spec and its raw little-endian data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    spec: TensorSpec,
    data: Bytes,
}

impl Tensor {
    /// Wraps raw little-endian bytes; fails if their length does not fit the spec.
    pub fn from_bytes(spec: TensorSpec, data: Bytes) -> Result<Self, CodecError> {
        if spec.name.is_empty() {
            return Err(CodecError::EmptyName);
        }
        if data.len() != spec.byte_len() {
            let expected = spec.byte_len();
            return Err(CodecError::DataSize {
                name: spec.name,
                dtype: spec.dtype,
                expected,
                got: data.len(),
                shape: spec.shape,
            });
        }
        Ok(Tensor { spec, data })
    }

    /// An f32 tensor; fails if `values` does not have `shape`'s element count.
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Result<Self, CodecError> {
        let spec = TensorSpec { name: name.into(), dtype: DType::F32, shape };
        Self::from_bytes(spec, Bytes::copy_from_slice(bytemuck::cast_slice(values)))
    }

    /// An f32 tensor that takes ownership of `values` without copying them.
    pub fn from_f32_vec(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Result<Self, CodecError> {
        let spec = TensorSpec { name: name.into(), dtype: DType::F32, shape };
        Self::from_bytes(spec, Bytes::from_owner(F32Bytes(values)))
    }

    /// A tensor of `dtype` holding `values` rounded to that type.
    pub fn from_f32_as(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: &[f32],
        dtype: DType,
    ) -> Result<Self, CodecError> {
        let raw: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(values).to_vec(),
            DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            DType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        };
        Self::from_bytes(TensorSpec { name: name.into(), dtype, shape }, Bytes::from(raw))
    }

    pub fn spec(&self) -> &TensorSpec {
        &self.spec
    }
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    pub fn dtype(&self) -> DType {
        self.spec.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.spec.shape
    }
    pub fn numel(&self) -> usize {
        self.spec.numel()
    }
    /// Raw little-endian bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The values as f32: borrowed when the data is f32 and aligned, converted otherwise.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self.spec.dtype {
            DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(&self.data) {
                Ok(v) => Cow::Borrowed(v),
                Err(_) => Cow::Owned(
                    self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                ),
            },
            DType::F16 => {
                Cow::Owned(self.data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
            DType::BF16 => {
                Cow::Owned(self.data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
        }
    }

    /// Index of the first NaN or infinite element, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        match self.spec.dtype {
            DType::F32 => first_non_finite_f32(&self.to_f32()),
            DType::F16 => self.data.chunks_exact(2).position(|c| !f16::from_le_bytes([c[0], c[1]]).is_finite()),
            DType::BF16 => self.data.chunks_exact(2).position(|c| !bf16::from_le_bytes([c[0], c[1]]).is_finite()),
        }
    }
}

/// Index of the first NaN/infinity. Scans blocks with a branch-free test the compiler
/// vectorises, and looks for the index only in a block that has one.
fn first_non_finite_f32(values: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    const BLOCK: usize = 256;
    values.chunks(BLOCK).enumerate().find_map(|(b, block)| {
        let bad = block.iter().fold(false, |acc, v| acc | (v.to_bits() & EXP == EXP));
        bad.then(|| b * BLOCK + block.iter().position(|v| !v.is_finite()).unwrap_or(0))
    })
}

/// Lends a `Vec<f32>`'s memory to `Bytes` as little-endian bytes (all supported targets are LE).
struct F32Bytes(Vec<f32>);

impl AsRef<[u8]> for F32Bytes {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// An ordered set of uniquely named tensors: a model, an adapter, or an update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bundle {
    tensors: Vec<Tensor>,
}

impl Bundle {
    /// Builds a bundle; fails on a duplicate name.
    pub fn new(tensors: Vec<Tensor>) -> Result<Self, CodecError> {
        let mut names = std::collections::HashSet::new();
        for t in &tensors {
            if !names.insert(t.name()) {
                return Err(CodecError::DuplicateName(t.name().to_string()));
            }
        }
        Ok(Bundle { tensors })
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.tensors
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name() == name)
    }
    pub fn manifest(&self) -> Vec<TensorSpec> {
        self.tensors.iter().map(|t| t.spec().clone()).collect()
    }
    /// Total elements over all tensors.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(Tensor::numel).sum()
    }
    /// Total raw bytes over all tensors.
    pub fn byte_len(&self) -> usize {
        self.tensors.iter().map(|t| t.data().len()).sum()
    }

    /// Fails with the first tensor holding a NaN or infinity.
    pub fn check_finite(&self) -> Result<(), CodecError> {
        for t in &self.tensors {
            if let Some(index) = t.first_non_finite() {
                return Err(CodecError::NonFinite { name: t.name().to_string(), index });
            }
        }
        Ok(())
    }
}
