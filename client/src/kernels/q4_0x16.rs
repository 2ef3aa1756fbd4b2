//! Q4_0 weight rows interleaved sixteen at a time: the layout of the AVX-512 VNNI kernels
//! ([`super::avx512`]).
//!
//! In the file, a Q4_0 row is a run of 18-byte blocks (an f16 scale, then 16 bytes holding 32
//! 4-bit codes: code j in the low nibble of byte j, code j + 16 in its high nibble). A SIMD dot
//! product over such rows ends every row with a horizontal sum. Here sixteen rows share each
//! vector instead: for every group of 16 rows and every block column, the 16 scales, then four
//! 64-byte lines where line k holds bytes 4k..4k+4 of each row's codes, row after row. One
//! `vpdpbusd` then multiplies 4 codes of all 16 rows by 4 activation codes broadcast to every
//! lane, and each lane ends as one row's result: no horizontal sums, no shuffles, the weights
//! read once in order. The same idea as llama.cpp's repacked `q4_0_8x8`, laid out for 512-bit
//! registers. Same size as the Q4_0 rows it is made from.

use super::QMatrix;
use crate::quant::GgmlType;

/// Rows per interleaved group (the 16 i32 lanes of a 512-bit register).
pub const GROUP_ROWS: usize = 16;

/// Bytes of one Q4_0 block: an f16 scale and 16 bytes of codes.
const BLOCK_BYTES: usize = 18;

/// One 64-byte line of codes, aligned for whole-register loads.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct Line(pub [u8; 64]);

/// A Q4_0 matrix in the interleaved layout.
#[derive(Debug)]
pub struct Q4_0x16 {
    rows: usize,
    cols: usize,
    /// 4 lines per (group, block column), groups outer.
    codes: Vec<Line>,
    /// The 16 rows' f16 scales per (group, block column), as stored (bits).
    scales: Vec<[u16; GROUP_ROWS]>,
}

impl Q4_0x16 {
    /// Interleaves `m`; `None` unless it is Q4_0 with a multiple of 16 rows.
    pub fn pack(m: &QMatrix) -> Option<Self> {
        if m.ty != GgmlType::Q4_0 || !m.rows.is_multiple_of(GROUP_ROWS) || m.rows == 0 {
            return None;
        }
        let nb = m.cols / 32;
        let groups = m.rows / GROUP_ROWS;
        let mut codes = vec![Line([0; 64]); groups * nb * 4];
        let mut scales = vec![[0u16; GROUP_ROWS]; groups * nb];
        for row in 0..m.rows {
            let (g, r) = (row / GROUP_ROWS, row % GROUP_ROWS);
            for (b, block) in m.row(row).chunks_exact(BLOCK_BYTES).enumerate() {
                let at = g * nb + b;
                scales[at][r] = u16::from_le_bytes([block[0], block[1]]);
                for (k, line) in codes[at * 4..at * 4 + 4].iter_mut().enumerate() {
                    line.0[r * 4..r * 4 + 4].copy_from_slice(&block[2 + 4 * k..6 + 4 * k]);
                }
            }
        }
        Some(Self {
            rows: m.rows,
            cols: m.cols,
            codes,
            scales,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.cols / 32
    }

    /// The code lines of group `g` (4 per block column).
    pub fn group_codes(&self, g: usize) -> &[Line] {
        let nb = self.blocks();
        &self.codes[g * nb * 4..(g + 1) * nb * 4]
    }

    /// The scales of group `g` (one set of 16 per block column).
    pub fn group_scales(&self, g: usize) -> &[[u16; GROUP_ROWS]] {
        let nb = self.blocks();
        &self.scales[g * nb..(g + 1) * nb]
    }

    /// Row `r` back in Q4_0's own layout (tests and embedding lookups).
    pub fn row_q4_0(&self, r: usize) -> Vec<u8> {
        let (g, i) = (r / GROUP_ROWS, r % GROUP_ROWS);
        let mut out = Vec::with_capacity(self.blocks() * BLOCK_BYTES);
        for (b, s) in self.group_scales(g).iter().enumerate() {
            out.extend_from_slice(&s[i].to_le_bytes());
            for k in 0..4 {
                out.extend_from_slice(&self.group_codes(g)[b * 4 + k].0[i * 4..i * 4 + 4]);
            }
        }
        out
    }

    /// Bytes held (codes and scales).
    pub fn bytes(&self) -> usize {
        self.codes.len() * 64 + self.scales.len() * 2 * GROUP_ROWS
    }
}
