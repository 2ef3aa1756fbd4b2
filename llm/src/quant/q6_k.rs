//! Q6_K: 256 values in 210 bytes (ggml `block_q6_K`), 16 sub-blocks of 16 values.
//!
//! | bytes    | field    | meaning                                      |
//! |----------|----------|----------------------------------------------|
//! | 0..128   | `ql`     | low 4 bits of the codes                       |
//! | 128..192 | `qh`     | high 2 bits of the codes                      |
//! | 192..208 | `scales` | 16 × i8 sub-block scales                      |
//! | 208..210 | `d`      | f16 super-scale                               |
//!
//! Value `i = 128·h + 32·k + l` (`h` < 2, `k` < 4, `l` < 32): low bits are the low nibble of
//! `ql[64·h + 32·(k % 2) + l]` for `k` < 2 and the high nibble for `k` ≥ 2; high bits are bits
//! `2k..2k+2` of `qh[32·h + l]`. `x = (d · scales[i / 16]) · (q − 32)`.

use super::f16_from;

pub const BLOCK_LEN: usize = 256;
pub const BLOCK_BYTES: usize = 210;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let ql = &b[0..128];
        let qh = &b[128..192];
        let scales = &b[192..208];
        let d = f16_from(b[208], b[209]);
        for (i, v) in y.iter_mut().enumerate() {
            let (h, k, l) = (i / 128, (i / 32) % 4, i % 32);
            let lbyte = ql[64 * h + 32 * (k % 2) + l];
            let low = if k < 2 { lbyte & 0x0F } else { lbyte >> 4 };
            let high = (qh[32 * h + l] >> (2 * k)) & 3;
            let q = i32::from(low | (high << 4)) - 32;
            let sc = f32::from(scales[i / 16] as i8);
            *v = d * sc * q as f32;
        }
    });
}
