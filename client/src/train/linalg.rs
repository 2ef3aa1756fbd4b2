//! The matrix products of training, straight from a weight matrix in its stored format: each
//! task dequantizes a few rows (or a column segment of every row) into a small scratch buffer,
//! never the whole matrix. Work is split across the rayon pool by weight rows or column
//! segments, so every output is summed in a fixed order whatever the number of threads
//! (training is reproducible).

use rayon::prelude::*;

use crate::kernels::{QMatrix, dot_f32};
use crate::quant::{self, GgmlType, QuantError};

/// Weight rows dequantized together in [`matmul_t`] (each activation row is then reused for
/// all of them while in L1).
const ROW_BLOCK: usize = 16;
/// Weight rows whose outputs [`matmul_t`] holds before copying them out.
const GROUP_ROWS: usize = 1024;
/// Target columns per task in [`matmul_acc`] (rounded to whole blocks of the format).
const COL_SEGMENT: usize = 64;
/// Weight rows per step in [`matmul_acc`] (the length of its dot products).
const ROW_CHUNK: usize = 256;

/// `y = x · Wᵀ`: `x` is `[n × W.cols]`, `y` is `[n × W.rows]` (overwritten).
pub fn matmul_t(w: &QMatrix, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    let (rows, cols) = (w.rows, w.cols);
    let n = x.len() / cols;
    debug_assert_eq!(x.len(), n * cols);
    debug_assert_eq!(y.len(), n * rows);
    if n == 0 || rows == 0 {
        return Ok(());
    }
    // Groups of blocks run in parallel, block b holding rows b·ROW_BLOCK.. as
    // [n × block rows]; each group is copied out before the next (bounding the scratch to
    // n × GROUP_ROWS values).
    let n_blocks = rows.div_ceil(ROW_BLOCK);
    let per_group = GROUP_ROWS / ROW_BLOCK;
    for g0 in (0..n_blocks).step_by(per_group) {
        let blocks = (g0..(g0 + per_group).min(n_blocks))
            .into_par_iter()
            .map(|b| {
                let (r0, r1) = (b * ROW_BLOCK, ((b + 1) * ROW_BLOCK).min(rows));
                let nr = r1 - r0;
                let mut wrows = vec![0f32; nr * cols];
                for (r, dst) in (r0..r1).zip(wrows.chunks_exact_mut(cols)) {
                    w.dequantize_row(r, dst)?;
                }
                let mut out = vec![0f32; n * nr];
                for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(nr)) {
                    for (o, wr) in o.iter_mut().zip(wrows.chunks_exact(cols)) {
                        *o = dot_f32(xr, wr);
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>, QuantError>>()?;
        y.par_chunks_mut(rows).enumerate().for_each(|(t, yr)| {
            for (i, out) in blocks.iter().enumerate() {
                let nr = out.len() / n;
                yr[(g0 + i) * ROW_BLOCK..][..nr].copy_from_slice(&out[t * nr..][..nr]);
            }
        });
    }
    Ok(())
}

/// `dx += dy · W`: `dy` is `[n × W.rows]`, `dx` is `[n × W.cols]` (the backward of
/// [`matmul_t`] with respect to its input). Each task owns a segment of columns and walks the
/// rows in chunks, dequantizing only that segment's blocks of each row and transposing the
/// chunk, so that every output is a sum of dot products along rows.
pub fn matmul_acc(w: &QMatrix, dy: &[f32], dx: &mut [f32]) -> Result<(), QuantError> {
    let (rows, cols) = (w.rows, w.cols);
    let n = dy.len() / rows.max(1);
    debug_assert_eq!(dy.len(), n * rows);
    debug_assert_eq!(dx.len(), n * cols);
    if n == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    let (bl, bb) = (w.ty.block_len(), w.ty.block_bytes());
    let seg = COL_SEGMENT.div_ceil(bl) * bl;
    let parts = (0..cols.div_ceil(seg))
        .into_par_iter()
        .map(|s| {
            let (c0, c1) = (s * seg, ((s + 1) * seg).min(cols));
            let width = c1 - c0;
            let mut wseg = vec![0f32; width];
            // The chunk's segment transposed: wt[c][r − r0].
            let mut wt = vec![0f32; width * ROW_CHUNK];
            let mut acc = vec![0f32; n * width];
            for r0 in (0..rows).step_by(ROW_CHUNK) {
                let nr = ROW_CHUNK.min(rows - r0);
                for i in 0..nr {
                    quant::dequantize_row(
                        w.ty,
                        &w.row(r0 + i)[c0 / bl * bb..c1 / bl * bb],
                        &mut wseg,
                    )?;
                    for (c, &v) in wseg.iter().enumerate() {
                        wt[c * nr + i] = v;
                    }
                }
                for (dyr, a) in dy.chunks_exact(rows).zip(acc.chunks_exact_mut(width)) {
                    let d = &dyr[r0..r0 + nr];
                    for (c, a) in a.iter_mut().enumerate() {
                        *a += dot_f32(d, &wt[c * nr..][..nr]);
                    }
                }
            }
            Ok(acc)
        })
        .collect::<Result<Vec<_>, QuantError>>()?;
    dx.par_chunks_mut(cols).enumerate().for_each(|(t, dxr)| {
        for (s, acc) in parts.iter().enumerate() {
            let width = acc.len() / n;
            add(&mut dxr[s * seg..][..width], &acc[t * width..][..width]);
        }
    });
    Ok(())
}

/// `dw += dyᵀ · x`: `dy` is `[n × rows]`, `x` is `[n × cols]`, `dw` is `[rows × cols]` (the
/// gradient of a weight matrix from its output gradient and input), as dot products over the
/// `n` rows.
pub fn outer_acc(dy: &[f32], x: &[f32], rows: usize, cols: usize, dw: &mut [f32]) {
    let n = dy.len() / rows.max(1);
    debug_assert_eq!(x.len(), n * cols);
    debug_assert_eq!(dw.len(), rows * cols);
    if n == 0 || cols == 0 {
        return;
    }
    let dyt = transpose(dy, n, rows);
    let xt = transpose(x, n, cols);
    dw.par_chunks_mut(cols)
        .zip(dyt.par_chunks(n))
        .for_each(|(dwr, d)| {
            for (o, xc) in dwr.iter_mut().zip(xt.chunks_exact(n)) {
                *o += dot_f32(d, xc);
            }
        });
}

/// A borrowed f32 matrix `[rows × cols]` as a [`QMatrix`] (LoRA factors, owned weights).
pub fn f32_matrix(data: &[f32], rows: usize, cols: usize) -> QMatrix<'_> {
    QMatrix::new(GgmlType::F32, rows, cols, bytemuck::cast_slice(data))
        .expect("data holds rows × cols values")
}

/// `[n × m]` → `[m × n]`.
pub fn transpose(a: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for (i, row) in a.chunks_exact(m).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * n + i] = v;
        }
    }
    t
}

/// `y += a·x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `y += x`.
#[inline]
pub fn add(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::random::SplitMix64;

    fn naive(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        x.chunks_exact(cols)
            .flat_map(|xr| {
                (0..rows).map(move |r| {
                    xr.iter()
                        .zip(&w[r * cols..][..cols])
                        .map(|(a, b)| a * b)
                        .sum()
                })
            })
            .collect()
    }

    #[test]
    fn products_match_naive_arithmetic_for_quantized_weights() {
        let mut rng = SplitMix64::new(7);
        let (rows, cols, n) = (37, 96, 5);
        let w = rng.uniform(rows * cols, 1.0);
        let x = rng.uniform(n * cols, 1.0);
        let dy = rng.uniform(n * rows, 1.0);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
        ] {
            let bytes = quant::quantize(ty, &w).unwrap();
            let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            let wd = quant::dequantize(ty, &bytes, rows * cols).unwrap();
            let mut y = vec![0f32; n * rows];
            matmul_t(&m, &x, &mut y).unwrap();
            for (a, b) in y.iter().zip(naive(&wd, rows, cols, &x)) {
                assert!((a - b).abs() < 1e-4, "{ty:?}: {a} vs {b}");
            }
            // dx = dy · W is the product with Wᵀ.
            let wt = transpose(&wd, rows, cols);
            let mut dx = vec![1f32; n * cols];
            matmul_acc(&m, &dy, &mut dx).unwrap();
            for (a, b) in dx.iter().zip(naive(&wt, cols, rows, &dy)) {
                assert!((a - 1.0 - b).abs() < 1e-4, "{ty:?}: {a} vs {b} + 1");
            }
        }
        let mut dw = vec![0f32; rows * cols];
        outer_acc(&dy, &x, rows, cols, &mut dw);
        let want = naive(&transpose(&x, n, cols), cols, n, &transpose(&dy, n, rows));
        for (a, b) in dw.iter().zip(want) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
