//! llama.cpp's tensor block formats ("ggml types"): layouts, dequantization, quantization.
//!
//! Every format stores a row of `n` values as `n / block_len` blocks of `block_bytes` bytes.
//! Layouts follow ggml bit for bit so GGUF files from llama.cpp load as they are; each format
//! lives in its own file.
//!
//! The per-format modules decode (and, where fedtune needs it, encode) whole blocks with plain
//! scalar loops; [`dequantize_row`] / [`quantize_row`] check lengths and dispatch. Quantizers
//! reproduce ggml's reference `quantize_row_*_ref` (and gguf-py's `gguf.quants.quantize`) bit
//! for bit; `llm/tests/quant_golden.rs` checks both directions against fixtures made by
//! gguf-py, and by ggml's C reference for the activation formats Q8_1 and Q8_K
//! (`scripts/reference/golden_quants.py`).
//!
//! Quantizers exist for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K and NF4
//! ([`GgmlType::can_quantize`]); every format dequantizes.

use std::fmt;

use half::f16;

mod error;
mod float;
mod nf4;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
pub(crate) mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
pub(crate) mod q6_k;
mod q8_0;
mod q8_1;
pub(crate) mod q8_k;
#[cfg(test)]
mod tests;

pub use error::QuantError;

/// A tensor element format, numbered as GGUF numbers it (`ggml_type`).
///
/// `Nf4` is QLoRA's 4-bit NormalFloat; GGUF has no number for it, so it never appears in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Bf16,
    Nf4,
}

impl GgmlType {
    /// The type for a GGUF `ggml_type` number, if fedtune knows it.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// The GGUF `ggml_type` number (`None` for formats GGUF cannot store).
    pub fn id(self) -> Option<u32> {
        Some(match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::Bf16 => 30,
            Self::Nf4 => return None,
        })
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::Bf16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Nf4 => 64,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            // 64 packed 4-bit codes + an f32 absmax (bitsandbytes without double quantization)
            Self::Nf4 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// Bytes of a row of `n` values, or `None` if `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }

    /// The name llama.cpp prints (`q4_0`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q8_1 => "q8_1",
            Self::Q2K => "q2_k",
            Self::Q3K => "q3_k",
            Self::Q4K => "q4_k",
            Self::Q5K => "q5_k",
            Self::Q6K => "q6_k",
            Self::Q8K => "q8_k",
            Self::Bf16 => "bf16",
            Self::Nf4 => "nf4",
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl GgmlType {
    /// Every format, in GGUF id order (NF4 last).
    pub const ALL: [GgmlType; 16] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
        Self::Q8K,
        Self::Bf16,
        Self::Nf4,
    ];

    /// The type with this [`name`](Self::name) (`"q4_0"`, `"bf16"`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether [`quantize_row`] can encode this format (all but Q2_K..Q6_K).
    pub fn can_quantize(self) -> bool {
        !matches!(
            self,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K
        )
    }
}

/// Decodes one row: `src` holds `dst.len()` values of type `ty` as whole blocks.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(ty, dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => float::dequantize_f32(src, dst),
        GgmlType::F16 => float::dequantize_f16(src, dst),
        GgmlType::Bf16 => float::dequantize_bf16(src, dst),
        GgmlType::Q4_0 => q4_0::dequantize(src, dst),
        GgmlType::Q4_1 => q4_1::dequantize(src, dst),
        GgmlType::Q5_0 => q5_0::dequantize(src, dst),
        GgmlType::Q5_1 => q5_1::dequantize(src, dst),
        GgmlType::Q8_0 => q8_0::dequantize(src, dst),
        GgmlType::Q8_1 => q8_1::dequantize(src, dst),
        GgmlType::Q2K => q2_k::dequantize(src, dst),
        GgmlType::Q3K => q3_k::dequantize(src, dst),
        GgmlType::Q4K => q4_k::dequantize(src, dst),
        GgmlType::Q5K => q5_k::dequantize(src, dst),
        GgmlType::Q6K => q6_k::dequantize(src, dst),
        GgmlType::Q8K => q8_k::dequantize(src, dst),
        GgmlType::Nf4 => nf4::dequantize(src, dst),
    }
    Ok(())
}

/// Encodes one row: `src.len()` values into `dst`, which must be exactly their whole blocks.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if !ty.can_quantize() {
        return Err(QuantError::CannotQuantize { ty });
    }
    check_lengths(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => float::quantize_f32(src, dst),
        GgmlType::F16 => float::quantize_f16(src, dst),
        GgmlType::Bf16 => float::quantize_bf16(src, dst),
        GgmlType::Q4_0 => q4_0::quantize(src, dst),
        GgmlType::Q4_1 => q4_1::quantize(src, dst),
        GgmlType::Q5_0 => q5_0::quantize(src, dst),
        GgmlType::Q5_1 => q5_1::quantize(src, dst),
        GgmlType::Q8_0 => q8_0::quantize(src, dst),
        GgmlType::Q8_1 => q8_1::quantize(src, dst),
        GgmlType::Q8K => q8_k::quantize(src, dst),
        GgmlType::Nf4 => nf4::quantize(src, dst),
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            return Err(QuantError::CannotQuantize { ty });
        }
    }
    Ok(())
}

/// [`quantize_row`] into a new buffer.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    if !ty.can_quantize() {
        return Err(QuantError::CannotQuantize { ty });
    }
    let mut dst = vec![0u8; expected_bytes(ty, src.len())?];
    quantize_row(ty, src, &mut dst)?;
    Ok(dst)
}

/// [`dequantize_row`] of `n` values into a new buffer.
pub fn dequantize(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    check_lengths(ty, n, src.len())?;
    let mut dst = vec![0f32; n];
    dequantize_row(ty, src, &mut dst)?;
    Ok(dst)
}

/// Bytes of `values` values of `ty`, or why they are not whole blocks.
fn expected_bytes(ty: GgmlType, values: usize) -> Result<usize, QuantError> {
    if !values.is_multiple_of(ty.block_len()) {
        return Err(QuantError::PartialBlock {
            ty,
            values,
            block_len: ty.block_len(),
        });
    }
    ty.row_bytes(values)
        .ok_or(QuantError::TooLarge { ty, values })
}

pub(crate) fn check_lengths(ty: GgmlType, values: usize, bytes: usize) -> Result<(), QuantError> {
    if !bytes.is_multiple_of(ty.block_bytes()) {
        return Err(QuantError::PartialBlockBytes {
            ty,
            bytes,
            block_bytes: ty.block_bytes(),
        });
    }
    let expected_bytes = expected_bytes(ty, values)?;
    if bytes != expected_bytes {
        return Err(QuantError::LengthMismatch {
            ty,
            values,
            expected_bytes,
            bytes,
        });
    }
    Ok(())
}

/// A little-endian f16 as f32.
#[inline]
fn f16_from(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

/// An f32 rounded to f16 (nearest, ties to even), little-endian.
#[inline]
fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// (min, max) as ggml's reference quantizers find them (starting from ±`f32::MAX`).
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `d = amax / qmax` and its inverse (0 for an all-zero block), as Q8_0/Q8_1 pick them.
fn absmax_scale(x: &[f32], qmax: f32) -> (f32, f32) {
    let amax = x
        .iter()
        .fold(0.0f32, |a, v| if v.abs() > a { v.abs() } else { a });
    let d = amax / qmax;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// The loop of every block format's decoder: `f` on each whole block of `src` and the `len`
/// values it decodes to (callers check the lengths first).
#[inline(always)]
fn each_block<const BYTES: usize>(
    src: &[u8],
    dst: &mut [f32],
    len: usize,
    mut f: impl FnMut(&[u8; BYTES], &mut [f32]),
) {
    for (b, y) in src
        .as_chunks::<BYTES>()
        .0
        .iter()
        .zip(dst.chunks_exact_mut(len))
    {
        f(b, y);
    }
}

/// The loop of every block format's encoder: `f` on each `len` values of `src` and the
/// block they encode to.
#[inline(always)]
fn encode_blocks<const BYTES: usize>(
    src: &[f32],
    dst: &mut [u8],
    len: usize,
    mut f: impl FnMut(&[f32], &mut [u8; BYTES]),
) {
    for (x, b) in src
        .chunks_exact(len)
        .zip(dst.as_chunks_mut::<BYTES>().0.iter_mut())
    {
        f(x, b);
    }
}
