//! Compute kernels: dot products and matrix products straight from quantized blocks.
//!
//! As in llama.cpp, a matrix product quantizes each activation row once into the 8-bit format
//! that pairs with the weight format ([`act_type`]: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for
//! Q4_1/Q5_1), then runs integer dot products against every weight row. The weights are never
//! expanded to f32 (formats without a direct kernel dequantize one row at a time into a
//! scratch buffer). Each kernel has a portable [`scalar`] reference and, where the CPU allows,
//! an AVX2 path chosen at run time ([`cpu::level`]); on AVX-512 VNNI parts, Q4_0 matrices a
//! model has interleaved ([`q4_0x16`]) take the `vpdpbusd` kernels.

pub mod cpu;
pub(crate) mod dequant;
mod kquants;
mod matmul;
pub(crate) mod pool;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod q4_0x16;
#[cfg(test)]
mod tests;

pub use cpu::Level;
pub use matmul::{Acts, MatJob, matmul, matmul_into, matmul_many};
pub use q4_0x16::Q4_0x16;

use crate::quant::{self, GgmlType};

/// A dot product between one weight row and one prepared activation row, both as bytes.
pub type DotFn = fn(&[u8], &[u8]) -> f32;

/// One weight row · four activation rows, each result bit for bit the [`DotFn`]'s.
pub type Dot4Fn = fn(&[u8], [&[u8]; 4]) -> [f32; 4];

/// Weight rows the matrix product's tasks are multiples of (the AVX2 kernels take 4 at a time
/// for one activation row).
pub const TILE_ROWS: usize = 4;

/// A weight matrix borrowed from a model file: `rows` rows of `cols` values of type `ty`.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    data: &'a [u8],
    row_bytes: usize,
    /// The same rows interleaved for the AVX-512 kernels, when the model made them.
    packed: Option<&'a Q4_0x16>,
}

impl<'a> QMatrix<'a> {
    /// `None` if `cols` is not a whole number of blocks or `data` is not exactly the matrix.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Option<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        (row_bytes.checked_mul(rows)? == data.len()).then_some(Self {
            ty,
            rows,
            cols,
            data,
            row_bytes,
            packed: None,
        })
    }

    /// Products take `packed` (the same rows, interleaved) where the CPU runs its kernels.
    /// `None` (and `self` unchanged) if `packed` is not this matrix's shape.
    pub fn with_packed(self, packed: &'a Q4_0x16) -> Option<Self> {
        (self.ty == GgmlType::Q4_0 && packed.rows() == self.rows && packed.cols() == self.cols)
            .then_some(Self {
                packed: Some(packed),
                ..self
            })
    }

    pub fn row(&self, i: usize) -> &'a [u8] {
        &self.data[i * self.row_bytes..(i + 1) * self.row_bytes]
    }

    /// Row `i` as f32 (embedding lookups).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) -> Result<(), quant::QuantError> {
        dequant::dequantize_row(self.ty, self.row(i), out)
    }
}

/// Weight formats with an AVX2 `avx2::gemm` kernel (its const parameter `F`).
pub(crate) const GEMM_Q4_0: u8 = 0;
pub(crate) const GEMM_Q4_1: u8 = 1;
pub(crate) const GEMM_Q8_0: u8 = 2;
pub(crate) const GEMM_Q5_0: u8 = 3;

/// One activation block as the AVX2 kernels read it: 32 codes, then 32 format-specific bytes
/// (for Q4_0 and Q5_0 weights the eight i32 sums `8·Σ a` over each group of 4 codes, the term that turns
/// `Σ q·a` into `Σ (q − 8)·a`; unused otherwise). 64-byte aligned: two aligned loads.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActBlock {
    pub qs: [u8; 32],
    pub extra: [u8; 32],
}

/// The format activations are prepared in for weights of type `w`.
pub fn act_type(w: GgmlType) -> GgmlType {
    match w {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q4K | GgmlType::Q6K => GgmlType::Q8K,
        _ => GgmlType::F32,
    }
}

/// The direct kernel for weights of type `w` at `level`, or `None` when rows of `w` must be
/// dequantized first (then activations are f32 and [`GgmlType::F32`]'s kernel applies).
pub fn dot_fn(w: GgmlType, level: Level) -> Option<DotFn> {
    match level {
        Level::Scalar => scalar_fn(w),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx512 => avx2_fn(w),
        #[cfg(not(target_arch = "x86_64"))]
        Level::Avx2 | Level::Avx512 => scalar_fn(w),
    }
}

fn scalar_fn(w: GgmlType) -> Option<DotFn> {
    Some(match w {
        GgmlType::Q4_0 => scalar::dot_q4_0_q8_0,
        GgmlType::Q4_1 => scalar::dot_q4_1_q8_1,
        GgmlType::Q5_0 => scalar::dot_q5_0_q8_0,
        GgmlType::Q5_1 => scalar::dot_q5_1_q8_1,
        GgmlType::Q8_0 => scalar::dot_q8_0_q8_0,
        GgmlType::Q4K => kquants::dot_q4_k_q8_k,
        GgmlType::Q6K => kquants::dot_q6_k_q8_k,
        GgmlType::F32 => scalar::dot_f32,
        GgmlType::F16 => scalar::dot_f16_f32,
        GgmlType::Bf16 => scalar::dot_bf16_f32,
        _ => return None,
    })
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn avx2_fn(w: GgmlType) -> Option<DotFn> {
    // SAFETY (every wrapper): `avx2_fn` is reached only when `cpu::level()` found AVX2, FMA
    // and F16C on this CPU, which is all these functions need.
    fn q4_0(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_q4_0_q8_0(w, a) }
    }
    fn q4_1(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_q4_1_q8_1(w, a) }
    }
    fn q5_0(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_q5_0_q8_0(w, a) }
    }
    fn q5_1(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_q5_1_q8_1(w, a) }
    }
    fn q8_0(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_q8_0_q8_0(w, a) }
    }
    fn f32_(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_f32(w, a) }
    }
    fn q4_k(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_q4_k_q8_k(w, a) }
    }
    fn q6_k(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_q6_k_q8_k(w, a) }
    }
    fn f16_(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_f16_f32(w, a) }
    }
    fn bf16_(w: &[u8], a: &[u8]) -> f32 {
        unsafe { avx2::dot_bf16_f32(w, a) }
    }
    if cpu::detected() < Level::Avx2 {
        return scalar_fn(w);
    }
    Some(match w {
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4K => q4_k,
        GgmlType::Q6K => q6_k,
        GgmlType::F32 => f32_,
        GgmlType::F16 => f16_,
        GgmlType::Bf16 => bf16_,
        _ => return None,
    })
}

/// The kernel taking four activation rows at once for weights of type `w` at `level`, where
/// one exists (the K-quants on AVX2: each weight block is unpacked once for the four).
pub fn dot4_fn(w: GgmlType, level: Level) -> Option<Dot4Fn> {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    if level >= Level::Avx2 && cpu::detected() >= Level::Avx2 {
        // SAFETY (both): AVX2, FMA and F16C were detected on this CPU.
        fn q4_k(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            unsafe { avx2::dots_q4_k_q8_k::<4>(w, a) }
        }
        fn q6_k(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            unsafe { avx2::dots_q6_k_q8_k::<4>(w, a) }
        }
        return match w {
            GgmlType::Q4K => Some(q4_k),
            GgmlType::Q6K => Some(q6_k),
            _ => None,
        };
    }
    let _ = (w, level);
    None
}

/// f32 · f32 with the best kernel this CPU has.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let f = dot_fn(GgmlType::F32, cpu::level()).unwrap_or(scalar::dot_f32);
    f(bytemuck::cast_slice(a), bytemuck::cast_slice(b))
}
