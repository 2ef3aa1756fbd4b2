//! Q4_K: 256 values in 144 bytes (ggml `block_q4_K`), 8 sub-blocks of 32 values.
//!
//! | bytes   | field    | meaning                                                    |
//! |---------|----------|------------------------------------------------------------|
//! | 0..2    | `d`      | f16 super-scale for the scales                              |
//! | 2..4    | `dmin`   | f16 super-scale for the mins                                |
//! | 4..16   | `scales` | 8 6-bit scales and 8 6-bit mins, packed (see [`scale_min`]) |
//! | 16..144 | `qs`     | 4-bit codes: value `64·c + l` (`l` < 32) is the low nibble of `qs[32·c + l]`, value `64·c + 32 + l` its high nibble |
//!
//! In sub-block `s` (= value index / 32): `x = (d · sc[s]) · q − dmin · m[s]`.

use super::f16_from;

pub const BLOCK_LEN: usize = 256;
pub const BLOCK_BYTES: usize = 144;

/// The 6-bit (scale, min) of sub-block `j` (< 8) from the 12 packed bytes, as ggml's
/// `get_scale_min_k4`: for `j` < 4 the low 6 bits of `packed[j]` and `packed[j + 4]`; for
/// `j` ≥ 4 the low nibble (scale) and high nibble (min) of `packed[j + 4]`, topped with the
/// 2 high bits of `packed[j − 4]` (scale) and `packed[j]` (min).
pub fn scale_min(packed: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        let sc = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
        let m = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
        (sc, m)
    }
}

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let d = f16_from(b[0], b[1]);
        let dmin = f16_from(b[2], b[3]);
        let mut packed = [0u8; 12];
        packed.copy_from_slice(&b[4..16]);
        let qs = &b[16..144];
        for (s, ys) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min(&packed, s);
            let d1 = d * f32::from(sc);
            let m1 = dmin * f32::from(m);
            let (c, high) = (s / 2, s % 2 == 1);
            for (l, v) in ys.iter_mut().enumerate() {
                let byte = qs[32 * c + l];
                let q = if high { byte >> 4 } else { byte & 0x0F };
                *v = d1 * f32::from(q) - m1;
            }
        }
    });
}
