//! Q4_1: 32 values in 20 bytes (ggml `block_q4_1`).
//!
//! | bytes  | field | meaning                                                        |
//! |--------|-------|----------------------------------------------------------------|
//! | 0..2   | `d`   | f16 scale                                                      |
//! | 2..4   | `m`   | f16 offset (the block minimum)                                 |
//! | 4..20  | `qs`  | value `j` (< 16) in the low nibble of `qs[j]`, value `j + 16` in its high nibble |
//!
//! `x = d · q + m` (product rounded to f32, then the sum).

use super::{f16_bytes, f16_from};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 20;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f16_from(b[0], b[1]);
        let m = f16_from(b[2], b[3]);
        for j in 0..BLOCK_LEN / 2 {
            let q = b[4 + j];
            y[j] = f32::from(q & 0x0F) * d + m;
            y[j + BLOCK_LEN / 2] = f32::from(q >> 4) * d + m;
        }
    });
}

/// Encodes whole blocks of `src` as ggml's `quantize_row_q4_1_ref` does.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    super::encode_blocks::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |x, b| {
        let (min, max) = super::min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&f16_bytes(d));
        b[2..4].copy_from_slice(&f16_bytes(min));
        for j in 0..BLOCK_LEN / 2 {
            let q0 = (((x[j] - min) * id + 0.5) as u8).min(15);
            let q1 = (((x[j + BLOCK_LEN / 2] - min) * id + 0.5) as u8).min(15);
            b[4 + j] = q0 | (q1 << 4);
        }
    });
}
