//! The matrix products of training, straight from a weight matrix in its stored format: each
//! task dequantizes a tile of the weights (a few rows, or a column segment of some rows) into
//! a small scratch buffer, never the whole matrix, and multiplies it with a cache-blocked f32
//! GEMM (`matrixmultiply`, ndarray's, with FMA kernels picked at run time). Work is split
//! across the rayon pool by weight rows or column segments, as few as keep every thread busy
//! (each GEMM packs the activations again). Every output is still summed in the same order
//! whatever the split, which only decides which task computes it: training is reproducible
//! on any number of threads.

use rayon::prelude::*;

use crate::kernels::{QMatrix, dequant};
use crate::quant::{GgmlType, QuantError};

/// Weight rows dequantized and multiplied together in [`matmul_t`] (one task): two tasks a
/// thread, at most 256 rows (the scratch stays small).
fn row_block(rows: usize) -> usize {
    let tasks = 2 * rayon::current_num_threads();
    rows.div_ceil(tasks).next_multiple_of(16).clamp(16, 256)
}
/// Columns per task in [`matmul_acc`]: one segment a thread, in whole blocks of `block_len`
/// values and at least [`MIN_SEGMENT`].
fn col_segment(cols: usize, block_len: usize) -> usize {
    cols.div_ceil(rayon::current_num_threads())
        .max(MIN_SEGMENT)
        .next_multiple_of(block_len)
}
/// The narrowest segment [`matmul_acc`] splits off.
const MIN_SEGMENT: usize = 64;
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
    sa: (usize, usize),
    b: &[f32],
    sb: (usize, usize),
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() > (m - 1) * rsc + n - 1, "C out of bounds");
    // SAFETY: C's `m` rows of `n` values, `rsc` apart, lie inside `c` (asserted), which is
    // borrowed mutably and so aliases neither A nor B.
    #[allow(unsafe_code)]
    unsafe {
        gemm_raw((m, k, n), a, sa, b, sb, beta, c.as_mut_ptr(), rsc)
    };
}

/// [`gemm`] into C at `c`.
///
/// # Safety
/// C's `m` rows of `n` values, `rsc` apart from `c`, must be valid for writes, alias neither
/// A nor B, and be written by nobody else during the call.
#[allow(clippy::too_many_arguments, unsafe_code)]
unsafe fn gemm_raw(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: *mut f32,
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |r: usize, rs: usize, cn: usize, cs: usize| (r - 1) * rs + (cn - 1) * cs;
    assert!(k == 0 || a.len() > last(m, rsa, k, csa), "A out of bounds");
    assert!(k == 0 || b.len() > last(k, rsb, n, csb), "B out of bounds");
    // SAFETY: the asserts keep every element of A and B the strides address inside its
    // slice; C is the caller's to guarantee.
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
            c,
            rsc as isize,
            1,
        );
    }
}

/// Columns `c0..c0 + width` of a row-major `[rows × ld]` matrix, held by one task alone (see
/// [`par_col_blocks`]): tasks write their products straight into the shared output.
struct ColBlock<'a> {
    ptr: *mut f32,
    rows: usize,
    width: usize,
    ld: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

impl ColBlock<'_> {
    /// `C = A (rows×k) · B (k×width) + beta·C` with C these columns.
    fn gemm(
        &mut self,
        k: usize,
        a: &[f32],
        sa: (usize, usize),
        b: &[f32],
        sb: (usize, usize),
        beta: f32,
    ) {
        // SAFETY: C is this block's `rows` rows of `width` values, `ld` apart, inside the
        // matrix `par_col_blocks` borrowed mutably and written by this block alone.
        #[allow(unsafe_code)]
        unsafe {
            gemm_raw(
                (self.rows, k, self.width),
                a,
                sa,
                b,
                sb,
                beta,
                self.ptr,
                self.ld,
            )
        };
    }
}

/// Runs `f(i, block)` in parallel for the column blocks `i·width..` of `out` (`[rows × cols]`,
/// row-major), each block its own.
fn par_col_blocks<F>(out: &mut [f32], cols: usize, width: usize, f: F) -> Result<(), QuantError>
where
    F: Fn(usize, ColBlock<'_>) -> Result<(), QuantError> + Sync,
{
    let rows = out.len() / cols.max(1);
    assert_eq!(out.len(), rows * cols, "out is whole rows");
    // The base address as an integer, so the closure is `Sync`; each block offsets it.
    let base = out.as_mut_ptr() as usize;
    (0..cols.div_ceil(width)).into_par_iter().try_for_each(|i| {
        let c0 = i * width;
        let block = ColBlock {
            // SAFETY (of every later access): c0 < cols, so the block starts inside `out`;
            // its rows of `width.min(cols − c0)` values stay inside row-major `out`.
            ptr: (base as *mut f32).wrapping_add(c0),
            rows,
            width: width.min(cols - c0),
            ld: cols,
            _out: std::marker::PhantomData,
        };
        f(i, block)
    })
}

thread_local! {
    /// Each thread's dequantized weight tile, kept between products (a fresh allocation per
    /// task cost a page-zeroing fault per task).
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on this thread's tile scratch, at least `len` values (contents unspecified).
fn with_tile<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    TILE.with_borrow_mut(|t| {
        if t.len() < len {
            t.resize(len, 0.0);
        }
        f(&mut t[..len])
    })
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
    // Each task dequantizes a block of weight rows and writes y's columns for them.
    let block = row_block(rows);
    par_col_blocks(y, rows, block, |b, mut out| {
        let (r0, nr) = (b * block, out.width);
        with_tile(nr * cols, |wrows| {
            for (r, dst) in (r0..r0 + nr).zip(wrows.chunks_exact_mut(cols)) {
                w.dequantize_row(r, dst)?;
            }
            // y[:, r0..r0+nr] = x [n × cols] · wrowsᵀ [cols × nr]
            out.gemm(cols, x, (cols, 1), wrows, (1, cols), 0.0);
            Ok(())
        })
    })
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
    let seg = col_segment(cols, bl);
    par_col_blocks(dx, cols, seg, |s, mut out| {
        let (c0, width) = (s * seg, out.width);
        let (b0, b1) = (c0 / bl * bb, (c0 + width) / bl * bb);
        with_tile(width * ROW_CHUNK, |wseg| {
            for r0 in (0..rows).step_by(ROW_CHUNK) {
                let nr = ROW_CHUNK.min(rows - r0);
                // The chunk's rows of this segment: wseg[r − r0][c − c0].
                for (i, dst) in wseg.chunks_exact_mut(width).take(nr).enumerate() {
                    dequant::dequantize_row(w.ty, &w.row(r0 + i)[b0..b1], dst)?;
                }
                // dx[:, c0..c0+width] += dy[:, r0..r0+nr] [n × nr] · wseg [nr × width]
                out.gemm(nr, &dy[r0..], (rows, 1), wseg, (width, 1), 1.0);
            }
            Ok(())
        })
    })
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
    use crate::quant;

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

    /// The split of work follows the thread count; no sum may: products on pools of 1, 2 and
    /// 3 threads agree bit for bit, on shapes with several row chunks, segments and blocks.
    #[test]
    fn products_are_the_same_on_any_number_of_threads() {
        let mut rng = SplitMix64::new(11);
        for (ty, rows, cols, n) in [
            (GgmlType::Q8_0, 600, 320, 7),
            (GgmlType::Q4_1, 70, 256, 3),
            (GgmlType::F32, 33, 200, 5),
        ] {
            let w = rng.uniform(rows * cols, 1.0);
            let x = rng.uniform(n * cols, 1.0);
            let dy = rng.uniform(n * rows, 1.0);
            let bytes = quant::quantize(ty, &w).unwrap();
            let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut y = vec![f32::NAN; n * rows];
                    matmul_t(&m, &x, &mut y).unwrap();
                    let mut dx = vec![0.5f32; n * cols];
                    matmul_acc(&m, &dy, &mut dx).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    (bits(&y), bits(&dx))
                })
            };
            let one = run(1);
            let wd = quant::dequantize(ty, &bytes, rows * cols).unwrap();
            for (a, b) in one.0.iter().zip(naive(&wd, rows, cols, &x)) {
                assert!((f32::from_bits(*a) - b).abs() < 1e-3, "{ty:?}: {a} vs {b}");
            }
            for threads in [2, 3] {
                assert!(
                    run(threads) == one,
                    "{ty:?}: {threads} threads differ from 1"
                );
            }
        }
    }
}
