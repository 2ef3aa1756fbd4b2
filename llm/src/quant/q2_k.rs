//! Q2_K: 256 values in 84 bytes (ggml `block_q2_K`), 16 sub-blocks of 16 values.
//!
//! | bytes   | field    | meaning                                                       |
//! |---------|----------|---------------------------------------------------------------|
//! | 0..16   | `scales` | sub-block `s`: scale in the low nibble, min in the high nibble |
//! | 16..80  | `qs`     | 2-bit codes (see below)                                        |
//! | 80..82  | `d`      | f16 super-scale for the scales                                 |
//! | 82..84  | `dmin`   | f16 super-scale for the mins                                   |
//!
//! Value `i = 128·h + 32·k + l` (`h` < 2, `k` < 4, `l` < 32) is bits `2k..2k+2` of
//! `qs[32·h + l]`, in sub-block `i / 16`: `x = (d · sc) · q − dmin · m`.

use super::f16_from;

pub const BLOCK_LEN: usize = 256;
pub const BLOCK_BYTES: usize = 84;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = f16_from(b[80], b[81]);
        let dmin = f16_from(b[82], b[83]);
        for (i, v) in y.iter_mut().enumerate() {
            let (h, k, l) = (i / 128, (i / 32) % 4, i % 32);
            let q = (qs[32 * h + l] >> (2 * k)) & 3;
            let sc = scales[i / 16];
            let dl = d * f32::from(sc & 0x0F);
            let ml = dmin * f32::from(sc >> 4);
            *v = dl * f32::from(q) - ml;
        }
    });
}
