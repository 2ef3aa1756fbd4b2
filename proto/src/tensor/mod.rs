//! Named tensors and bundles of them, held as little-endian bytes so they move between
//! the wire, checkpoints and trainers without conversion.

use std::borrow::Cow;

use bytes::Bytes;
use half::{bf16, f16};

use crate::{CodecError, DType, TensorSpec};

/// One named tensor: its spec and its raw little-endian data.
#[derive(Clone, Debug)]
pub struct Tensor {
    spec: TensorSpec,
    data: Bytes,
    /// Set only by constructors that checked every value as they wrote it
    /// ([`Tensor::map_f32`]), so [`Tensor::first_non_finite`] need not read the data again.
    proved_finite: bool,
}

/// Equal names, shapes, dtypes and bytes (how a tensor's finiteness became known is not part
/// of its value).
impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.data == other.data
    }
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
        Ok(Tensor {
            spec,
            data,
            proved_finite: false,
        })
    }

    /// `f` applied to every value, as a new f32 tensor of the same name and shape. Each block
    /// of results is checked for NaN/infinity right after it is written, while it is still in
    /// L1 cache, so proving the tensor finite later costs nothing (a trainer forming its update
    /// this way saves the device a full read of it).
    pub fn map_f32(&self, f: impl Fn(f32) -> f32) -> Tensor {
        let src = self.to_f32();
        let (out, finite) = crate::simd::vectorized(
            #[inline(always)]
            move || map_checked(&src, f),
        );
        Tensor {
            spec: TensorSpec {
                name: self.spec.name.clone(),
                dtype: DType::F32,
                shape: self.spec.shape.clone(),
            },
            data: Bytes::from_owner(F32Bytes(out)),
            proved_finite: finite,
        }
    }

    /// An f32 tensor; fails if `values` does not have `shape`'s element count.
    pub fn from_f32(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: &[f32],
    ) -> Result<Self, CodecError> {
        let spec = TensorSpec {
            name: name.into(),
            dtype: DType::F32,
            shape,
        };
        Self::from_bytes(spec, Bytes::copy_from_slice(bytemuck::cast_slice(values)))
    }

    /// An f32 tensor that takes ownership of `values` without copying them.
    pub fn from_f32_vec(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: Vec<f32>,
    ) -> Result<Self, CodecError> {
        let spec = TensorSpec {
            name: name.into(),
            dtype: DType::F32,
            shape,
        };
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
            DType::U32 => {
                return Err(CodecError::NotFloat {
                    name: name.into(),
                    dtype,
                });
            }
            DType::F32 => bytemuck::cast_slice(values).to_vec(),
            DType::F16 => values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
            DType::BF16 => values
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect(),
        };
        Self::from_bytes(
            TensorSpec {
                name: name.into(),
                dtype,
                shape,
            },
            Bytes::from(raw),
        )
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

    /// A u32 tensor (secure aggregation's masked words) taking ownership of `values`.
    pub fn from_u32_vec(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: Vec<u32>,
    ) -> Result<Self, CodecError> {
        let spec = TensorSpec {
            name: name.into(),
            dtype: DType::U32,
            shape,
        };
        Self::from_bytes(spec, Bytes::from_owner(U32Bytes(values)))
    }

    /// The words of a u32 tensor; `None` for other dtypes.
    pub fn to_u32(&self) -> Option<Vec<u32>> {
        (self.spec.dtype == DType::U32).then(|| match bytemuck::try_cast_slice(&self.data) {
            Ok(words) => <[u32]>::to_vec(words),
            Err(_) => self
                .data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }

    /// The values as f32: borrowed when the data is f32 and aligned, converted otherwise (u32
    /// words to the nearest f32).
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self.spec.dtype {
            DType::U32 => Cow::Owned(
                self.data
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                    .collect(),
            ),
            DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(&self.data) {
                Ok(v) => Cow::Borrowed(v),
                Err(_) => Cow::Owned(
                    self.data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
            },
            DType::F16 => Cow::Owned(
                self.data
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            DType::BF16 => Cow::Owned(
                self.data
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
        }
    }

    /// Index of the first NaN or infinite element, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        if self.proved_finite {
            return None;
        }
        first_non_finite_bytes(&self.data, self.spec.dtype)
    }
}

/// [`Tensor::map_f32`]'s loop: `f` over `src`, each block of 1024 results checked for
/// NaN/infinity while in L1; returns the results and whether all are finite.
#[inline(always)]
fn map_checked(src: &[f32], f: impl Fn(f32) -> f32) -> (Vec<f32>, bool) {
    const BLOCK: usize = 1024;
    let mut out = Vec::with_capacity(src.len());
    let mut finite = true;
    for block in src.chunks(BLOCK) {
        let start = out.len();
        out.extend(block.iter().map(|&x| f(x)));
        finite &= !out[start..].iter().fold(false, |bad, v| {
            bad | (v.to_bits() & F32_EXPONENT == F32_EXPONENT)
        });
    }
    (out, finite)
}

/// Index of the first NaN/infinity among little-endian `dtype` values (a trailing partial
/// element is ignored). A value is non-finite when its exponent bits are all ones; blocks are
/// tested branch-free (the compiler vectorises it) and searched only when one holds a hit.
pub(crate) fn first_non_finite_bytes(bytes: &[u8], dtype: DType) -> Option<usize> {
    fn scan<const N: usize>(bytes: &[u8], bad: impl Fn([u8; N]) -> bool) -> Option<usize> {
        const BLOCK: usize = 256;
        let elem = |c: &[u8]| -> [u8; N] { c.try_into().unwrap_or([0; N]) };
        bytes.chunks(BLOCK * N).enumerate().find_map(|(b, block)| {
            let hit = block
                .chunks_exact(N)
                .fold(false, |acc, c| acc | bad(elem(c)));
            hit.then(|| {
                b * BLOCK
                    + block
                        .chunks_exact(N)
                        .position(|c| bad(elem(c)))
                        .unwrap_or(0)
            })
        })
    }
    match dtype {
        DType::U32 => None,
        // Aligned f32 data (the usual case) is scanned as words, which vectorizes fully.
        DType::F32 if bytes.len().is_multiple_of(4) => {
            match bytemuck::try_cast_slice::<u8, u32>(bytes) {
                Ok(words) => first_non_finite_words(words),
                Err(_) => scan::<4>(bytes, |b| {
                    u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000
                }),
            }
        }
        DType::F32 => scan::<4>(bytes, |b| {
            u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000
        }),
        DType::F16 => scan::<2>(bytes, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
        DType::BF16 => scan::<2>(bytes, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
    }
}

/// [`first_non_finite_bytes`] over little-endian f32 words already in memory.
/// An f32's exponent bits: all ones in NaN and the infinities only.
const F32_EXPONENT: u32 = 0x7f80_0000;

fn first_non_finite_words(words: &[u32]) -> Option<usize> {
    const BLOCK: usize = 1024;
    let bad = |w: u32| w & F32_EXPONENT == F32_EXPONENT;
    crate::simd::vectorized(
        #[inline(always)]
        move || {
            words.chunks(BLOCK).enumerate().find_map(|(b, block)| {
                let hit = block
                    .iter()
                    .fold(false, |acc, &w| acc | bad(u32::from_le(w)));
                hit.then(|| {
                    b * BLOCK
                        + block
                            .iter()
                            .position(|&w| bad(u32::from_le(w)))
                            .unwrap_or(0)
                })
            })
        },
    )
}

/// Lends a `Vec<f32>`'s memory to `Bytes` as little-endian bytes (all supported targets are LE).
struct F32Bytes(Vec<f32>);

impl AsRef<[u8]> for F32Bytes {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// [`F32Bytes`] for words.
struct U32Bytes(Vec<u32>);

impl AsRef<[u8]> for U32Bytes {
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
    /// The L2 norm of all values together, summed in f64.
    pub fn l2_norm(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| {
                t.to_f32()
                    .iter()
                    .map(|&v| f64::from(v).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            .sqrt()
    }
    /// Every value multiplied by `factor` (in f64, rounded once), each tensor keeping its dtype.
    pub fn scaled(&self, factor: f64) -> Result<Bundle, CodecError> {
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let v: Vec<f32> = t
                    .to_f32()
                    .iter()
                    .map(|&x| (f64::from(x) * factor) as f32)
                    .collect();
                Tensor::from_f32_as(t.name(), t.shape().to_vec(), &v, t.dtype())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Bundle::new(tensors)
    }
    /// Total raw bytes over all tensors.
    pub fn byte_len(&self) -> usize {
        self.tensors.iter().map(|t| t.data().len()).sum()
    }

    /// Fails with the first tensor holding a NaN or infinity.
    pub fn check_finite(&self) -> Result<(), CodecError> {
        for t in &self.tensors {
            if let Some(index) = t.first_non_finite() {
                return Err(CodecError::NonFinite {
                    name: t.name().to_string(),
                    index,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
