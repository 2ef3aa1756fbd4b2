//! Q8_1: 32 values in 36 bytes (ggml `block_q8_1`), the activation format llama.cpp pairs
//! with Q4_1/Q5_1 weights.
//!
//! | bytes  | field | meaning                                                  |
//! |--------|-------|----------------------------------------------------------|
//! | 0..2   | `d`   | f16 scale                                                |
//! | 2..4   | `s`   | f16 `d · Σ qs` (the f32 `d` before rounding to f16)      |
//! | 4..36  | `qs`  | 32 × i8, in order                                        |
//!
//! `x = d · q`. `s` lets a dot product with an offset format add `m · Σ x` without summing.
//! Quantization is ggml's `quantize_row_q8_1_ref`: as Q8_0 (`d = amax / 127`, round half away
//! from zero), then `s = f16(f32(Σ qs) · d)`.

use super::{f16_bytes, f16_from};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 36;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block); `s` is not needed.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f16_from(b[0], b[1]);
        for (v, &q) in y.iter_mut().zip(&b[4..]) {
            *v = f32::from(q as i8) * d;
        }
    });
}

/// Encodes whole blocks of `src` as ggml's `quantize_row_q8_1_ref` does.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    super::encode_blocks::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |x, b| {
        let (d, id) = super::absmax_scale(x, 127.0);
        let mut sum = 0i32;
        for (q, &v) in b[4..].iter_mut().zip(x) {
            let qi = (v * id).round() as i8;
            sum += i32::from(qi);
            *q = qi as u8;
        }
        b[0..2].copy_from_slice(&f16_bytes(d));
        b[2..4].copy_from_slice(&f16_bytes(sum as f32 * d));
    });
}
