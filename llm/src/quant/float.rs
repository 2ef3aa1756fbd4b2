//! The unblocked formats: F32, F16 and BF16 (one value per "block"), little-endian.
//!
//! * F32: IEEE binary32 bits.
//! * F16: IEEE binary16 via `half`; f32 → f16 rounds to nearest, ties to even, overflows to
//!   ±inf, keeps NaNs NaN (quiet).
//! * BF16: the top 16 bits of binary32. f32 → bf16 follows ggml's `ggml_compute_fp32_to_bf16`
//!   (and gguf-py): a NaN keeps its top 16 bits with the quiet bit forced on; everything else
//!   (including subnormals and infinities) rounds to nearest, ties to even, on the dropped 16
//!   bits. bf16 → f32 is exact (a shift).

use half::f16;

/// f32 → bf16 bits, rounding as ggml does.
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: truncate, force quiet so the payload cannot round into an infinity.
        ((u >> 16) | 0x40) as u16
    } else {
        // No overflow: the largest non-NaN pattern is 0xff80_0000 (−inf).
        ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
    }
}

/// bf16 bits → f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

pub fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<4>().0.iter().zip(dst.iter_mut()) {
        *y = f32::from_le_bytes(*b);
    }
}

pub fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.as_chunks_mut::<4>().0.iter_mut()) {
        *b = x.to_le_bytes();
    }
}

pub fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<2>().0.iter().zip(dst.iter_mut()) {
        *y = f16::from_le_bytes(*b).to_f32();
    }
}

pub fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.as_chunks_mut::<2>().0.iter_mut()) {
        *b = f16::from_f32(*x).to_le_bytes();
    }
}

pub fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.as_chunks::<2>().0.iter().zip(dst.iter_mut()) {
        *y = bf16_to_f32(u16::from_le_bytes(*b));
    }
}

pub fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.iter().zip(dst.as_chunks_mut::<2>().0.iter_mut()) {
        *b = f32_to_bf16(*x).to_le_bytes();
    }
}
