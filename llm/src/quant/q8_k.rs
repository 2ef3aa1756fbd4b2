//! Q8_K: 256 values in 292 bytes (ggml `block_q8_K`), the activation format llama.cpp pairs
//! with the k-quant weights. Never stored in model files.
//!
//! | bytes    | field   | meaning                                              |
//! |----------|---------|------------------------------------------------------|
//! | 0..4     | `d`     | f32 scale (little-endian)                             |
//! | 4..260   | `qs`    | 256 × i8, in order                                    |
//! | 260..292 | `bsums` | 16 × little-endian i16: sums of `qs` in groups of 16  |
//!
//! `x = d · q`. Quantization is ggml's `quantize_row_q8_K_ref`: `iscale = −127 / max` where
//! `max` is the (first) value of largest magnitude, `q = min(127, round_half_even(iscale · x))`,
//! `d = 1 / iscale`. An all-zero block gets `d = 0` and zero codes and sums (ggml leaves the
//! sums of such a block unwritten; zero is what they would sum to).

pub const BLOCK_LEN: usize = 256;
pub const BLOCK_BYTES: usize = 292;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (v, &q) in y.iter_mut().zip(&b[4..260]) {
            *v = d * f32::from(q as i8);
        }
    });
}

/// Encodes whole blocks of `src` as ggml's `quantize_row_q8_K_ref` does.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    super::encode_blocks::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |x, b| {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.fill(0);
            return;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b[4..260].iter_mut().zip(x) {
            // ggml's `nearest_int`: adding and removing 1.5·2²³ rounds half to even (here
            // |iscale·v| ≤ 127, far below 2²²), without a call to `rintf`.
            let r = ((iscale * v + 12_582_912.0) - 12_582_912.0).min(127.0);
            *q = r as i8 as u8;
        }
        for g in 0..BLOCK_LEN / 16 {
            let sum: i16 = b[4 + 16 * g..4 + 16 * (g + 1)]
                .iter()
                .map(|&q| i16::from(q as i8))
                .sum();
            b[260 + 2 * g..262 + 2 * g].copy_from_slice(&sum.to_le_bytes());
        }
        b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    });
}
