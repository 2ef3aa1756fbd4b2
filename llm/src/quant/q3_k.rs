//! Q3_K: 256 values in 110 bytes (ggml `block_q3_K`), 16 sub-blocks of 16 values.
//!
//! | bytes    | field    | meaning                                               |
//! |----------|----------|-------------------------------------------------------|
//! | 0..32    | `hmask`  | high bits: value `i` is bit `i / 32` of `hmask[i % 32]` |
//! | 32..96   | `qs`     | low 2 bits: value `i = 128·h + 32·k + l` is bits `2k..2k+2` of `qs[32·h + l]` |
//! | 96..108  | `scales` | 16 6-bit scales, packed (see [`unpack_scales`])        |
//! | 108..110 | `d`      | f16 super-scale                                        |
//!
//! The code is `low − 4` when the high bit is clear and `low` when it is set (so −4..3);
//! `x = (d · (scale − 32)) · code`.

use super::f16_from;

pub const BLOCK_LEN: usize = 256;
pub const BLOCK_BYTES: usize = 110;

/// The 16 signed sub-block scales (already minus 32). Scale `s` has its low 4 bits in
/// `packed[s % 8]` (low nibble for `s` < 8, high nibble otherwise) and its top 2 bits in bits
/// `2·(s / 4)..+2` of `packed[8 + s % 4]`.
pub fn unpack_scales(packed: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (s, o) in out.iter_mut().enumerate() {
        let low = if s < 8 {
            packed[s] & 0x0F
        } else {
            packed[s - 8] >> 4
        };
        let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let hmask = &b[0..32];
        let qs = &b[32..96];
        let mut packed = [0u8; 12];
        packed.copy_from_slice(&b[96..108]);
        let scales = unpack_scales(&packed);
        let d = f16_from(b[108], b[109]);
        for (i, v) in y.iter_mut().enumerate() {
            let (h, k, l) = (i / 128, (i / 32) % 4, i % 32);
            let low = ((qs[32 * h + l] >> (2 * k)) & 3) as i8;
            let high_set = (hmask[l] >> (i / 32)) & 1 != 0;
            let q = if high_set { low } else { low - 4 };
            let dl = d * f32::from(scales[i / 16]);
            *v = dl * f32::from(q);
        }
    });
}
