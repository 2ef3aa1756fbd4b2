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
//!
//! The codes of a model's matrices live in one anonymous mapping advised to use transparent
//! huge pages ([`Q4_0x16::pack_all`]): generating a token streams every matrix once, and with
//! 4 KiB pages that walk costs a TLB miss per page.

use std::sync::Arc;

use super::{ActBlock, QMatrix};
use crate::quant::GgmlType;

/// Rows per interleaved group (the 16 i32 lanes of a 512-bit register).
pub const GROUP_ROWS: usize = 16;

/// Bytes of one Q4_0 block: an f16 scale and 16 bytes of codes.
const BLOCK_BYTES: usize = 18;

/// Bytes of one line of codes: 4 code bytes of each of the 16 rows.
pub const LINE_BYTES: usize = 64;

/// A Q4_0 matrix in the interleaved layout.
#[derive(Debug)]
pub struct Q4_0x16 {
    rows: usize,
    cols: usize,
    /// The mapping holding this matrix's code lines (shared by the matrices packed together).
    arena: Arc<memmap2::Mmap>,
    /// Where they start in it (a multiple of 64).
    offset: usize,
    /// The 16 rows' f16 scales per (group, block column), as stored (bits).
    scales: Vec<[u16; GROUP_ROWS]>,
}

/// The activations the interleaved kernels read: per row, its Q8_0 blocks, `8·Σ a` per block,
/// and `[d, ..]` per block (the f32 scale in lane 0).
#[derive(Clone, Copy)]
pub(super) struct ActRows<'a> {
    pub blocks: &'a [ActBlock],
    pub sums8: &'a [i32],
    pub scales: &'a [[f32; 4]],
    /// Blocks per row.
    pub nb: usize,
}

/// The interleaved products' loop, shared by the AVX2 and AVX-512 kernels: tiles of activation
/// rows outside (the largest of `max_t`, 4, 2 or 1 rows that is left, so a tile's activation
/// blocks stay in L1 while the weight groups stream past), the weight groups `g0..g1` inside.
/// `tile(t0, take, g)` multiplies activation rows `t0..t0 + take` by group `g`.
#[inline(always)]
pub(super) fn for_each_tile(
    n: usize,
    max_t: usize,
    (g0, g1): (usize, usize),
    mut tile: impl FnMut(usize, usize, usize),
) {
    let mut t0 = 0;
    while t0 < n {
        let take = match n - t0 {
            k if k >= max_t => max_t,
            k if k >= 4 => 4,
            k if k >= 2 => 2,
            _ => 1,
        };
        for g in g0..g1 {
            tile(t0, take, g);
        }
        t0 += take;
    }
}

/// Whether [`Q4_0x16`] can hold `m`.
pub fn can_pack(m: &QMatrix) -> bool {
    m.ty == GgmlType::Q4_0 && m.rows > 0 && m.rows.is_multiple_of(GROUP_ROWS)
}

/// Bytes of code lines for `m`.
fn code_bytes(m: &QMatrix) -> usize {
    m.rows / GROUP_ROWS * (m.cols / 32) * 4 * LINE_BYTES
}

impl Q4_0x16 {
    /// Interleaves `m`; `None` unless [`can_pack`] (or memory cannot be mapped).
    pub fn pack(m: &QMatrix) -> Option<Self> {
        Self::pack_all(std::slice::from_ref(m), |_| {})?.pop()
    }

    /// Interleaves every matrix of `ms` into one mapping (`None` unless each [`can_pack`]),
    /// calling `done(i)` after matrix `i`. One mapping advised to use transparent huge pages:
    /// a whole model's matrices then stream with a TLB miss per 2 MiB instead of per 4 KiB.
    pub fn pack_all(ms: &[QMatrix], mut done: impl FnMut(usize)) -> Option<Vec<Self>> {
        if !ms.iter().all(can_pack) {
            return None;
        }
        let total = ms.iter().map(code_bytes).sum::<usize>();
        let mut arena = memmap2::MmapMut::map_anon(total.max(1)).ok()?;
        // Best effort: without huge pages the layout is the same, only slower to stream.
        let _ = arena.advise(memmap2::Advice::HugePage);
        let mut parts = Vec::with_capacity(ms.len());
        let mut offset = 0;
        for (i, m) in ms.iter().enumerate() {
            let len = code_bytes(m);
            let scales = write_lines(m, &mut arena[offset..offset + len]);
            parts.push((offset, scales));
            offset += len;
            done(i);
        }
        let arena = Arc::new(arena.make_read_only().ok()?);
        Some(
            ms.iter()
                .zip(parts)
                .map(|(m, (offset, scales))| Self {
                    rows: m.rows,
                    cols: m.cols,
                    arena: Arc::clone(&arena),
                    offset,
                    scales,
                })
                .collect(),
        )
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

    /// The code lines of group `g` (4 per block column, [`LINE_BYTES`] each, the first
    /// 64-byte aligned).
    pub fn group_codes(&self, g: usize) -> &[u8] {
        let len = self.blocks() * 4 * LINE_BYTES;
        &self.arena[self.offset + g * len..self.offset + (g + 1) * len]
    }

    /// The scales of group `g` (one set of 16 per block column).
    pub fn group_scales(&self, g: usize) -> &[[u16; GROUP_ROWS]] {
        let nb = self.blocks();
        &self.scales[g * nb..(g + 1) * nb]
    }

    /// Row `r` back in Q4_0's own layout (the tests' check that nothing is lost).
    #[cfg(test)]
    pub(super) fn row_q4_0(&self, r: usize) -> Vec<u8> {
        let (g, i) = (r / GROUP_ROWS, r % GROUP_ROWS);
        let mut out = Vec::with_capacity(self.blocks() * BLOCK_BYTES);
        for (b, s) in self.group_scales(g).iter().enumerate() {
            out.extend_from_slice(&s[i].to_le_bytes());
            for k in 0..4 {
                let line = (b * 4 + k) * LINE_BYTES;
                out.extend_from_slice(&self.group_codes(g)[line + i * 4..line + i * 4 + 4]);
            }
        }
        out
    }

    /// Bytes held (codes and scales).
    pub fn bytes(&self) -> usize {
        self.rows / GROUP_ROWS * self.blocks() * 4 * LINE_BYTES + self.scales.len() * 2 * GROUP_ROWS
    }
}

/// Writes `m`'s code lines into `lines` ([`code_bytes`] long) and returns its scales.
fn write_lines(m: &QMatrix, lines: &mut [u8]) -> Vec<[u16; GROUP_ROWS]> {
    let nb = m.cols / 32;
    let mut scales = vec![[0u16; GROUP_ROWS]; m.rows / GROUP_ROWS * nb];
    for row in 0..m.rows {
        let (g, r) = (row / GROUP_ROWS, row % GROUP_ROWS);
        for (b, block) in m.row(row).chunks_exact(BLOCK_BYTES).enumerate() {
            let at = g * nb + b;
            scales[at][r] = u16::from_le_bytes([block[0], block[1]]);
            for k in 0..4 {
                let line = (at * 4 + k) * LINE_BYTES;
                lines[line + r * 4..line + r * 4 + 4].copy_from_slice(&block[2 + 4 * k..6 + 4 * k]);
            }
        }
    }
    scales
}
