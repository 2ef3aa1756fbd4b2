//! The matrix products of training, straight from a weight matrix in its stored format: each
//! task dequantizes a tile of the weights (a few rows, or a column segment of some rows) into
//! a small scratch buffer, never the whole matrix, and multiplies it with a cache-blocked f32
//! GEMM (`matrixmultiply`, ndarray's, with FMA kernels picked at run time). Work is split
//! across the rayon pool by weight rows or column segments of fixed size, so every output is
//! summed in a fixed order whatever the number of threads (training is reproducible).

use rayon::prelude::*;

use crate::kernels::QMatrix;
use crate::quant::{self, GgmlType, QuantError};

/// Weight rows dequantized and multiplied together in [`matmul_t`] (one task): large blocks
/// for large matrices (each GEMM packs the activations again), small ones so that small
/// matrices still split across threads. Depends on the shape only, never the thread count.
fn row_block(rows: usize) -> usize {
    if rows >= 2048 { 256 } else { 64 }
}
/// Weight rows whose outputs [`matmul_t`] holds before copying them out.
const GROUP_ROWS: usize = 2048;
/// Target columns per task in [`matmul_acc`] (rounded to whole blocks of the format).
const COL_SEGMENT: usize = 64;
/// Weight rows per GEMM in [`matmul_acc`].
const ROW_CHUNK: usize = 256;
/// Rows of the gradient per task in [`outer_acc`].
const OUTER_ROWS: usize = 64;

/// `C (m×n) = A (m×k) · B (k×n) + beta·C`, every matrix given by its base slice and (row,
/// column) strides in elements.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |r: usize, rs: usize, cn: usize, cs: usize| (r - 1) * rs + (cn - 1) * cs;
    assert!(k == 0 || a.len() > last(m, rsa, k, csa), "A out of bounds");
    assert!(k == 0 || b.len() > last(k, rsb, n, csb), "B out of bounds");
    assert!(c.len() > last(m, rsc, n, 1), "C out of bounds");
    // SAFETY: the asserts above keep every element the strides address inside its slice;
    // `c` is borrowed mutably, so it does not alias `a` or `b`.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        );
    }
}

/// `y = x · Wᵀ`: `x` is `[n × W.cols]`, `y` is `[n × W.rows]` (overwritten).
pub fn matmul_t(w: &QMatrix, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    let (rows, cols) = (w.rows, w.cols);
    let n = x.len() / cols.max(1);
    debug_assert_eq!(x.len(), n * cols);
    debug_assert_eq!(y.len(), n * rows);
    if n == 0 || rows == 0 {
        return Ok(());
    }
    // Groups of blocks run in parallel, block b holding rows b·block.. as
    // [n × block rows]; each group is copied out before the next (bounding the scratch to
    // n × GROUP_ROWS values).
    let block = row_block(rows);
    let n_blocks = rows.div_ceil(block);
    let per_group = GROUP_ROWS / block;
    for g0 in (0..n_blocks).step_by(per_group) {
        let blocks = (g0..(g0 + per_group).min(n_blocks))
            .into_par_iter()
            .map(|b| {
                let (r0, r1) = (b * block, ((b + 1) * block).min(rows));
                let nr = r1 - r0;
                let mut wrows = vec![0f32; nr * cols];
                for (r, dst) in (r0..r1).zip(wrows.chunks_exact_mut(cols)) {
                    w.dequantize_row(r, dst)?;
                }
                // out [n × nr] = x [n × cols] · wrowsᵀ [cols × nr]
                let mut out = vec![0f32; n * nr];
                gemm(
                    (n, cols, nr),
                    x,
                    (cols, 1),
                    &wrows,
                    (1, cols),
                    0.0,
                    &mut out,
                    nr,
                );
                Ok(out)
            })
            .collect::<Result<Vec<_>, QuantError>>()?;
        y.par_chunks_mut(rows).enumerate().for_each(|(t, yr)| {
            for (i, out) in blocks.iter().enumerate() {
                let nr = out.len() / n;
                yr[(g0 + i) * block..][..nr].copy_from_slice(&out[t * nr..][..nr]);
            }
        });
    }
    Ok(())
}

/// `dx += dy · W`: `dy` is `[n × W.rows]`, `dx` is `[n × W.cols]` (the backward of
/// [`matmul_t`] with respect to its input). Each task owns a segment of columns and walks the
/// rows in chunks, dequantizing only that segment's blocks of each row.
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
            // The chunk's rows of this segment: wseg[r − r0][c − c0].
            let mut wseg = vec![0f32; width * ROW_CHUNK];
            let mut acc = vec![0f32; n * width];
            for r0 in (0..rows).step_by(ROW_CHUNK) {
                let nr = ROW_CHUNK.min(rows - r0);
                for (i, dst) in wseg.chunks_exact_mut(width).take(nr).enumerate() {
                    quant::dequantize_row(w.ty, &w.row(r0 + i)[c0 / bl * bb..c1 / bl * bb], dst)?;
                }
                // acc [n × width] += dy[:, r0..r0+nr] [n × nr] · wseg [nr × width]
                gemm(
                    (n, nr, width),
                    &dy[r0..],
                    (rows, 1),
                    &wseg,
                    (width, 1),
                    1.0,
                    &mut acc,
                    width,
                );
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
/// gradient of a weight matrix from its output gradient and input), summed over the `n` rows.
pub fn outer_acc(dy: &[f32], x: &[f32], rows: usize, cols: usize, dw: &mut [f32]) {
    let n = dy.len() / rows.max(1);
    debug_assert_eq!(x.len(), n * cols);
    debug_assert_eq!(dw.len(), rows * cols);
    if n == 0 || cols == 0 {
        return;
    }
    dw.par_chunks_mut(OUTER_ROWS * cols)
        .enumerate()
        .for_each(|(b, dwb)| {
            let r0 = b * OUTER_ROWS;
            let nr = dwb.len() / cols;
            // dwb [nr × cols] += dy[:, r0..r0+nr]ᵀ [nr × n] · x [n × cols]
            gemm(
                (nr, n, cols),
                &dy[r0..],
                (1, rows),
                x,
                (cols, 1),
                1.0,
                dwb,
                cols,
            );
        });
}

/// A borrowed f32 matrix `[rows × cols]` as a [`QMatrix`] (LoRA factors, owned weights).
pub fn f32_matrix(data: &[f32], rows: usize, cols: usize) -> QMatrix<'_> {
    QMatrix::new(GgmlType::F32, rows, cols, bytemuck::cast_slice(data))
        .expect("data holds rows × cols values")
}

/// `[n × m]` → `[m × n]` (tests check the products against it).
#[cfg(test)]
fn transpose(a: &[f32], n: usize, m: usize) -> Vec<f32> {
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
