//! Small dense linear algebra for merging LoRA factors, in f64: a thin QR (Householder), an
//! SVD (one-sided Jacobi) and the truncated re-factorisation of a product B·A. Sizes are a
//! LoRA module's (hundreds of rows, tens to hundreds of columns), where these simple, exact
//! methods are fast and need no LAPACK.

/// A row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Self {
        let data = (0..rows * cols).map(|k| f(k / cols, k % cols)).collect();
        Mat { rows, cols, data }
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    fn at_mut(&mut self, i: usize, j: usize) -> &mut f64 {
        &mut self.data[i * self.cols + j]
    }

    pub fn t(&self) -> Mat {
        Mat::from_fn(self.cols, self.rows, |i, j| self.at(j, i))
    }

    pub fn mul(&self, other: &Mat) -> Mat {
        assert_eq!(self.cols, other.rows, "inner dimensions");
        let mut out = Mat::zeros(self.rows, other.cols);
        for i in 0..self.rows {
            for k in 0..self.cols {
                let a = self.at(i, k);
                if a == 0.0 {
                    continue;
                }
                let row = &other.data[k * other.cols..(k + 1) * other.cols];
                for (o, &b) in out.data[i * other.cols..(i + 1) * other.cols]
                    .iter_mut()
                    .zip(row)
                {
                    *o += a * b;
                }
            }
        }
        out
    }

    pub fn frobenius(&self) -> f64 {
        self.data.iter().map(|x| x * x).sum::<f64>().sqrt()
    }
}

/// Thin QR: `a = q·r`, `q` (m × k) with orthonormal columns, `r` (k × n) upper triangular,
/// k = min(m, n). Householder reflections, so rank-deficient inputs are fine.
pub fn qr(a: &Mat) -> (Mat, Mat) {
    let (m, n) = (a.rows, a.cols);
    let k = m.min(n);
    let mut r = a.clone();
    let mut reflectors: Vec<Vec<f64>> = Vec::with_capacity(k);
    for j in 0..k {
        let norm = (j..m).map(|i| r.at(i, j).powi(2)).sum::<f64>().sqrt();
        let mut v: Vec<f64> = (j..m).map(|i| r.at(i, j)).collect();
        let alpha = if v[0] > 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let vnorm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if vnorm > 0.0 {
            v.iter_mut().for_each(|x| *x /= vnorm);
            for c in j..n {
                let dot: f64 = (j..m).map(|i| v[i - j] * r.at(i, c)).sum();
                for i in j..m {
                    *r.at_mut(i, c) -= 2.0 * v[i - j] * dot;
                }
            }
        }
        reflectors.push(v);
    }
    let mut q = Mat::from_fn(m, k, |i, j| f64::from(u8::from(i == j)));
    for (j, v) in reflectors.iter().enumerate().rev() {
        for c in 0..k {
            let dot: f64 = (j..m).map(|i| v[i - j] * q.at(i, c)).sum();
            for i in j..m {
                *q.at_mut(i, c) -= 2.0 * v[i - j] * dot;
            }
        }
    }
    let r = Mat::from_fn(k, n, |i, j| if j >= i { r.at(i, j) } else { 0.0 });
    (q, r)
}

/// SVD `a = u · diag(s) · vᵀ` with s descending; `u` (m × p), `v` (n × p), p = min(m, n).
pub fn svd(a: &Mat) -> (Mat, Vec<f64>, Mat) {
    if a.rows < a.cols {
        let (u, s, v) = svd(&a.t());
        return (v, s, u);
    }
    let (m, n) = (a.rows, a.cols);
    let mut u = a.clone();
    let mut v = Mat::from_fn(n, n, |i, j| f64::from(u8::from(i == j)));
    for _sweep in 0..80 {
        let mut rotated = false;
        for i in 0..n {
            for j in i + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for r in 0..m {
                    let (x, y) = (u.at(r, i), u.at(r, j));
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for mat in [&mut u, &mut v] {
                    for r in 0..mat.rows {
                        let (x, y) = (mat.at(r, i), mat.at(r, j));
                        *mat.at_mut(r, i) = c * x - s * y;
                        *mat.at_mut(r, j) = s * x + c * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..n)
        .map(|j| (0..m).map(|r| u.at(r, j).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]));
    let s: Vec<f64> = order.iter().map(|&j| norms[j]).collect();
    let u = Mat::from_fn(m, n, |r, k| {
        let j = order[k];
        if norms[j] > 0.0 {
            u.at(r, j) / norms[j]
        } else {
            0.0
        }
    });
    let v = Mat::from_fn(n, n, |r, k| v.at(r, order[k]));
    (u, s, v)
}

/// The best rank-`rank` factorisation of `b · a` (Eckart–Young), split evenly between the
/// factors: `(a', b')` with a' (rank × a.cols) and b' (b.rows × rank), b'·a' the truncated
/// SVD of b·a. Works on the factors (QR of each, SVD of the small core), never forming b·a.
/// Directions beyond the product's rank come out as zero rows of a' and columns of b'.
pub fn refactor(b: &Mat, a: &Mat, rank: usize) -> (Mat, Mat) {
    let (qb, rb) = qr(b);
    let (qa, ra) = qr(&a.t());
    let (u, s, v) = svd(&rb.mul(&ra.t()));
    let kept = rank.min(s.len());
    let root: Vec<f64> = s.iter().take(kept).map(|x| x.sqrt()).collect();
    let us = Mat::from_fn(u.rows, rank, |i, j| {
        if j < kept { u.at(i, j) * root[j] } else { 0.0 }
    });
    let vs = Mat::from_fn(rank, v.rows, |i, j| {
        if i < kept { v.at(j, i) * root[i] } else { 0.0 }
    });
    (vs.mul(&qa.t()), qb.mul(&us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Mat, b: &Mat, tol: f64) -> bool {
        a.rows == b.rows
            && a.cols == b.cols
            && a.data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| (x - y).abs() <= tol)
    }

    fn sample(rows: usize, cols: usize, seed: usize) -> Mat {
        Mat::from_fn(rows, cols, |i, j| {
            // Pseudo-random in [−1, 1] and full rank (a sum of sines is rank 2).
            let k = (i * 7 + j * 3 + seed * 11 + 1).wrapping_mul(2_654_435_761) % 10_007;
            k as f64 / 5003.0 - 1.0
        })
    }

    #[test]
    fn qr_and_svd_reconstruct_including_rank_deficient_inputs() {
        for (m, n) in [(6, 3), (3, 6), (5, 5)] {
            let a = sample(m, n, 1);
            let (q, r) = qr(&a);
            assert!(close(&q.mul(&r), &a, 1e-12), "qr {m}x{n}");
            let k = m.min(n);
            assert!(close(
                &q.t().mul(&q),
                &Mat::from_fn(k, k, |i, j| f64::from(u8::from(i == j))),
                1e-12
            ));
            let (u, s, v) = svd(&a);
            let us = Mat::from_fn(u.rows, s.len(), |i, j| u.at(i, j) * s[j]);
            assert!(close(&us.mul(&v.t()), &a, 1e-12), "svd {m}x{n}");
            assert!(s.windows(2).all(|w| w[0] >= w[1]));
        }
        // Rank 1 (two equal columns and a zero one).
        let a = Mat::from_fn(4, 3, |i, j| if j < 2 { i as f64 + 1.0 } else { 0.0 });
        let (q, r) = qr(&a);
        assert!(close(&q.mul(&r), &a, 1e-12));
        let (_, s, _) = svd(&a);
        assert!(s[1].abs() < 1e-12 && s[2].abs() < 1e-12, "{s:?}");
    }
}
