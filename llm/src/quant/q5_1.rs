//! Q5_1: 32 values in 24 bytes (ggml `block_q5_1`).
//!
//! | bytes  | field | meaning                                                        |
//! |--------|-------|----------------------------------------------------------------|
//! | 0..2   | `d`   | f16 scale                                                      |
//! | 2..4   | `m`   | f16 offset (the block minimum)                                 |
//! | 4..8   | `qh`  | little-endian u32; bit `i` is bit 4 of value `i`'s code         |
//! | 8..24  | `qs`  | low 4 bits: value `j` (< 16) in the low nibble of `qs[j]`, value `j + 16` in its high nibble |
//!
//! `x = d · q + m` (product rounded to f32, then the sum).

use super::{f16_bytes, f16_from};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 24;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f16_from(b[0], b[1]);
        let m = f16_from(b[2], b[3]);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..BLOCK_LEN / 2 {
            let q = b[8 + j];
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + BLOCK_LEN / 2)) & 1) as u8;
            y[j] = f32::from((q & 0x0F) | (h0 << 4)) * d + m;
            y[j + BLOCK_LEN / 2] = f32::from((q >> 4) | (h1 << 4)) * d + m;
        }
    });
}

/// Encodes whole blocks of `src` as ggml's `quantize_row_q5_1_ref` does.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    super::encode_blocks::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |x, b| {
        let (min, max) = super::min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&f16_bytes(d));
        b[2..4].copy_from_slice(&f16_bytes(min));
        let mut qh = 0u32;
        for j in 0..BLOCK_LEN / 2 {
            let q0 = (((x[j] - min) * id + 0.5) as u8).min(31);
            let q1 = (((x[j + BLOCK_LEN / 2] - min) * id + 0.5) as u8).min(31);
            b[8 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= u32::from(q0 >> 4) << j;
            qh |= u32::from(q1 >> 4) << (j + BLOCK_LEN / 2);
        }
        b[4..8].copy_from_slice(&qh.to_le_bytes());
    });
}
