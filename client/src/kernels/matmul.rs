//! Matrix products `out = x · Wᵀ` for a quantized weight matrix `W` [rows × cols] and f32
//! activations `x` [n × cols], split by weight rows across the current rayon pool.

use rayon::prelude::*;

use super::{DotFn, Level, TILE_ACTS, TILE_ROWS, TileFn, act_type, cpu, dot_fn, tile_fn};
use crate::quant::{self, GgmlType};

/// A weight matrix borrowed from a model file: `rows` rows of `cols` values of type `ty`.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    data: &'a [u8],
    row_bytes: usize,
}

impl<'a> QMatrix<'a> {
    /// `None` if `cols` is not a whole number of blocks or `data` is not exactly the matrix.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Option<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        (row_bytes.checked_mul(rows)? == data.len()).then_some(Self {
            ty,
            rows,
            cols,
            data,
            row_bytes,
        })
    }

    pub fn row(&self, i: usize) -> &'a [u8] {
        &self.data[i * self.row_bytes..(i + 1) * self.row_bytes]
    }

    /// Row `i` as f32 (embedding lookups).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) -> Result<(), quant::QuantError> {
        quant::dequantize_row(self.ty, self.row(i), out)
    }
}

/// Activation rows prepared once for every weight row of one format.
#[derive(Debug)]
pub struct Acts {
    ty: GgmlType,
    row_bytes: usize,
    data: Vec<u8>,
}

impl Acts {
    /// Prepares `n` rows of `cols` values of `x` for weights of type `w`.
    pub fn prepare(w: GgmlType, x: &[f32], cols: usize) -> Self {
        let ty = if dot_fn(w, Level::Scalar).is_some() {
            act_type(w)
        } else {
            GgmlType::F32
        };
        let row_bytes = ty.row_bytes(cols).unwrap_or(0);
        let n = x.len() / cols.max(1);
        let mut data = vec![0u8; row_bytes * n];
        if ty == GgmlType::F32 {
            data.copy_from_slice(bytemuck::cast_slice(&x[..n * cols]));
        } else {
            for (d, row) in data.chunks_exact_mut(row_bytes).zip(x.chunks_exact(cols)) {
                quantize_act_row(ty, row, d);
            }
        }
        Self {
            ty,
            row_bytes,
            data,
        }
    }

    fn row(&self, t: usize) -> &[u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }

    fn n(&self) -> usize {
        self.data.len().checked_div(self.row_bytes).unwrap_or(0)
    }
}

/// `out[t][r] = Σ_c x[t][c] · W[r][c]` for `n = x.len() / W.cols` rows of `x`;
/// `out` has `n × W.rows` values.
pub fn matmul(w: &QMatrix, x: &[f32], out: &mut [f32]) {
    let acts = Acts::prepare(w.ty, x, w.cols);
    matmul_into(w, &acts, out);
}

/// [`matmul`] with activations already prepared (several matrices of one format sharing an
/// input, such as q/k/v or gate/up, prepare once).
pub fn matmul_into(w: &QMatrix, acts: &Acts, out: &mut [f32]) {
    let n = acts.n();
    assert_eq!(out.len(), n * w.rows, "matmul output size");
    let kernel = RowKernel::new(w.ty, acts.ty);
    let threads = rayon::current_num_threads().max(1);
    let chunk = w
        .rows
        .div_ceil(threads * 4)
        .max(16)
        .next_multiple_of(TILE_ROWS);
    if n == 1 {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, o)| kernel.rows(w, c * chunk, acts, o));
        return;
    }
    // Row-major by weight row so threads write disjoint slices, then transpose.
    let mut by_row = vec![0f32; n * w.rows];
    by_row
        .par_chunks_mut(chunk * n)
        .enumerate()
        .for_each(|(c, o)| kernel.rows(w, c * chunk, acts, o));
    for (r, vals) in by_row.chunks_exact(n).enumerate() {
        for (t, &v) in vals.iter().enumerate() {
            out[t * w.rows + r] = v;
        }
    }
}

/// How weight rows meet activation rows.
#[derive(Clone, Copy)]
enum RowKernel {
    /// Tiles of several rows × several activations on the quantized bytes.
    Tiled(TileFn),
    /// A direct kernel on the quantized bytes, one pair at a time.
    Direct(DotFn),
    /// Dequantize the row into scratch, then an f32 dot product.
    Dequantize(GgmlType, DotFn),
}

impl RowKernel {
    fn new(w: GgmlType, acts: GgmlType) -> Self {
        let level = cpu::level();
        let f32_dot = dot_fn(GgmlType::F32, level).expect("f32 kernel");
        if acts != act_type(w) {
            return Self::Dequantize(w, f32_dot);
        }
        match (tile_fn(w, level), dot_fn(w, level)) {
            (Some(t), _) => Self::Tiled(t),
            (None, Some(f)) => Self::Direct(f),
            (None, None) => Self::Dequantize(w, f32_dot),
        }
    }

    /// Fills `out` (`[rows][n]`, row-major) for weight rows `r0..` and all activations.
    fn rows(&self, w: &QMatrix, r0: usize, acts: &Acts, out: &mut [f32]) {
        let n = acts.n();
        let rows = out.len() / n;
        match *self {
            Self::Tiled(tile) => {
                // One token: 4 rows at a time (independent streams from memory); a batch:
                // 2 rows × 4 tokens, so each unpacked block serves several tokens.
                let (tr, ta) = if n == 1 {
                    (TILE_ROWS, 1)
                } else {
                    (2, TILE_ACTS)
                };
                let mut tmp = [0f32; TILE_ROWS * TILE_ACTS];
                for rs in (0..rows).step_by(tr) {
                    let nr = tr.min(rows - rs);
                    let wr: [&[u8]; TILE_ROWS] =
                        std::array::from_fn(|i| w.row(r0 + rs + i.min(nr - 1)));
                    for ts in (0..n).step_by(ta) {
                        let nt = ta.min(n - ts);
                        let ar: [&[u8]; TILE_ACTS] =
                            std::array::from_fn(|i| acts.row(ts + i.min(nt - 1)));
                        tile(&wr[..nr], &ar[..nt], &mut tmp[..nr * nt]);
                        for r in 0..nr {
                            out[(rs + r) * n + ts..][..nt].copy_from_slice(&tmp[r * nt..][..nt]);
                        }
                    }
                }
            }
            Self::Direct(f) => {
                for (k, vals) in out.chunks_exact_mut(n).enumerate() {
                    let wr = w.row(r0 + k);
                    for (t, v) in vals.iter_mut().enumerate() {
                        *v = f(wr, acts.row(t));
                    }
                }
            }
            Self::Dequantize(ty, f) => {
                let mut scratch = vec![0f32; w.cols];
                for (k, vals) in out.chunks_exact_mut(n).enumerate() {
                    quant::dequantize_row(ty, w.row(r0 + k), &mut scratch).expect("validated row");
                    for (t, v) in vals.iter_mut().enumerate() {
                        *v = f(bytemuck::cast_slice(&scratch), acts.row(t));
                    }
                }
            }
        }
    }
}

/// Quantizes one activation row as ggml's CPU backend does before a matrix product. For Q8_0
/// and Q8_1 that is the x86 AVX2 `quantize_row_q8_0` / `quantize_row_q8_1`, which differ from
/// the reference quantizers ([`quant::quantize_row`], used for weights) in two ways that flip
/// codes: the inverse scale is `127 / amax` (not `1 / (amax / 127)`), and halves round to even.
pub(super) fn quantize_act_row(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    let (header, sum_field) = match ty {
        GgmlType::Q8_0 => (2, false),
        GgmlType::Q8_1 => (4, true),
        _ => return quant::quantize_row(ty, x, out).expect("activation rows are whole blocks"),
    };
    let block_bytes = header + 32;
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(block_bytes)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b[header..].iter_mut().zip(xb) {
            // Round half to even (`_mm256_round_ps`): |v·id| ≤ 127, far below 2²², so adding and
            // removing 1.5·2²³ rounds to an integer exactly (and vectorizes, unlike `rintf`).
            let qi = ((v * id + 12_582_912.0) - 12_582_912.0) as i32;
            sum += qi;
            *q = qi as i8 as u8;
        }
        b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        if sum_field {
            b[2..4].copy_from_slice(&half::f16::from_f32(d * sum as f32).to_le_bytes());
        }
    }
}
