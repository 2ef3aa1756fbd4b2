//! Q5_K: 256 values in 176 bytes (ggml `block_q5_K`), 8 sub-blocks of 32 values.
//!
//! | bytes   | field    | meaning                                                         |
//! |---------|----------|-----------------------------------------------------------------|
//! | 0..2    | `d`      | f16 super-scale for the scales                                   |
//! | 2..4    | `dmin`   | f16 super-scale for the mins                                     |
//! | 4..16   | `scales` | packed as Q4_K's (see [`super::q4_k::scale_min`])                |
//! | 16..48  | `qh`     | bit 4 of the codes: value `i` is bit `i / 32` of `qh[i % 32]`     |
//! | 48..176 | `qs`     | low 4 bits, laid out as Q4_K's `qs`                               |
//!
//! In sub-block `s` (= value index / 32): `x = (d · sc[s]) · q − dmin · m[s]`, `q` in 0..32.

use super::f16_from;
use super::q4_k::scale_min;

pub const BLOCK_LEN: usize = 256;
pub const BLOCK_BYTES: usize = 176;

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f16_from(b[0], b[1]);
        let dmin = f16_from(b[2], b[3]);
        let mut packed = [0u8; 12];
        packed.copy_from_slice(&b[4..16]);
        let qh = &b[16..48];
        let qs = &b[48..176];
        for (s, ys) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min(&packed, s);
            let d1 = d * f32::from(sc);
            let m1 = dmin * f32::from(m);
            let (c, high) = (s / 2, s % 2 == 1);
            for (l, v) in ys.iter_mut().enumerate() {
                let byte = qs[32 * c + l];
                let low = if high { byte >> 4 } else { byte & 0x0F };
                let q = low | (((qh[l] >> s) & 1) << 4);
                *v = d1 * f32::from(q) - m1;
            }
        }
    });
}
