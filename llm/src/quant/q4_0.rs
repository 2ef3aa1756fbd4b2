//! Q4_0: 32 values in 18 bytes (ggml `block_q4_0`).
//!
//! | bytes  | field | meaning                                                        |
//! |--------|-------|----------------------------------------------------------------|
//! | 0..2   | `d`   | f16 scale                                                      |
//! | 2..18  | `qs`  | value `j` (< 16) in the low nibble of `qs[j]`, value `j + 16` in its high nibble |
//!
//! `x = d · (q − 8)`. The reference quantizer picks `d = max / −8`, where `max` is the
//! (first) value of largest magnitude, so that value lands exactly on code 0.

use super::{f16_bytes, f16_from};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 18;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f16_from(b[0], b[1]);
        for j in 0..BLOCK_LEN / 2 {
            let q = b[2 + j];
            y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
            y[j + BLOCK_LEN / 2] = (i32::from(q >> 4) - 8) as f32 * d;
        }
    });
}

/// Encodes whole blocks of `src` as ggml's `quantize_row_q4_0_ref` does.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    super::encode_blocks::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |x, b| {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&f16_bytes(d));
        for j in 0..BLOCK_LEN / 2 {
            // Truncation toward zero of a value in [0, 16.5], then clamp (as ggml's int cast).
            let q0 = ((x[j] * id + 8.5) as u8).min(15);
            let q1 = ((x[j + BLOCK_LEN / 2] * id + 8.5) as u8).min(15);
            b[2 + j] = q0 | (q1 << 4);
        }
    });
}
