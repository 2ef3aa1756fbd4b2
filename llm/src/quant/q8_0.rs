//! Q8_0: 32 values in 34 bytes (ggml `block_q8_0`).
//!
//! | bytes  | field | meaning              |
//! |--------|-------|----------------------|
//! | 0..2   | `d`   | f16 scale            |
//! | 2..34  | `qs`  | 32 × i8, in order    |
//!
//! `x = d · q`; the reference quantizer picks `d = amax / 127` and rounds half away from zero.

use super::{f16_bytes, f16_from};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 34;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f16_from(b[0], b[1]);
        for (v, &q) in y.iter_mut().zip(&b[2..]) {
            *v = f32::from(q as i8) * d;
        }
    });
}

/// Encodes whole blocks of `src` as ggml's `quantize_row_q8_0_ref` does.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    super::encode_blocks::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |x, b| {
        let (d, id) = super::absmax_scale(x, 127.0);
        b[0..2].copy_from_slice(&f16_bytes(d));
        for (q, &v) in b[2..].iter_mut().zip(x) {
            *q = (v * id).round() as i8 as u8;
        }
    });
}
