//! NF4: QLoRA's 4-bit NormalFloat (bitsandbytes `quant_type="nf4"`), 64 values in 36 bytes.
//! Not a GGUF type: fedtune uses it for frozen base weights under LoRA.
//!
//! | bytes  | field    | meaning                                                       |
//! |--------|----------|---------------------------------------------------------------|
//! | 0..32  | `codes`  | value `2j` in the HIGH nibble of byte `j`, value `2j + 1` in the low nibble (bitsandbytes' packing) |
//! | 32..36 | `absmax` | f32 (little-endian) block scale: the largest magnitude          |
//!
//! `x = NF4[code] · absmax` with [`NF4`] the 16 NormalFloat levels. This is bitsandbytes'
//! blockwise layout at blocksize 64 without double quantization (its absmax array interleaved
//! after each block's codes).
//!
//! Quantization follows bitsandbytes' `kQuantizeBlockwise`: `absmax = max |x|`, each value is
//! scaled by `1 / absmax` (a multiply, as bitsandbytes does) and coded as the nearest level;
//! a value exactly halfway between two levels takes the lower one (bitsandbytes' decision
//! tree compares with `>` against the midpoints). An all-zero block gets `absmax = 0` and
//! code 7 (level 0.0) everywhere.

pub const BLOCK_LEN: usize = 64;
pub const BLOCK_BYTES: usize = 36;

/// The 16 NormalFloat levels (QLoRA, Appendix E; bitsandbytes' `nf4` table), ascending.
#[allow(clippy::excessive_precision)]
pub const NF4: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// Midpoints between consecutive levels (bitsandbytes' decision-tree thresholds).
#[allow(clippy::excessive_precision)]
pub const MIDPOINTS: [f32; 15] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
];

/// The code of the level nearest to `x` (a value already scaled into [−1, 1]); ties go to the
/// lower level.
pub fn nearest_code(x: f32) -> u8 {
    // Count the thresholds strictly below x (NaN compares false everywhere → code 0).
    MIDPOINTS.iter().filter(|&&m| x > m).count() as u8
}

/// Decodes whole blocks of `src` into `dst` (`BLOCK_LEN` values per block).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::each_block::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |b, y| {
        let absmax = f32::from_le_bytes([b[32], b[33], b[34], b[35]]);
        for (j, pair) in y.chunks_exact_mut(2).enumerate() {
            pair[0] = NF4[usize::from(b[j] >> 4)] * absmax;
            pair[1] = NF4[usize::from(b[j] & 0x0F)] * absmax;
        }
    });
}

/// Encodes whole blocks of `src` (see the module docs for the rounding).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    super::encode_blocks::<BLOCK_BYTES>(src, dst, BLOCK_LEN, |x, b| {
        let absmax = x
            .iter()
            .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let inv = if absmax != 0.0 { 1.0 / absmax } else { 0.0 };
        for (j, pair) in x.chunks_exact(2).enumerate() {
            b[j] = (nearest_code(pair[0] * inv) << 4) | nearest_code(pair[1] * inv);
        }
        b[32..36].copy_from_slice(&absmax.to_le_bytes());
    });
}
