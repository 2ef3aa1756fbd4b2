//! The element-wise and per-row pieces of the decoder with their backward: RMSNorm, RoPE,
//! SwiGLU and LoRA dropout. The forward arithmetic follows `crate::llama` (RMSNorm squares
//! summed in f64, RoPE angles stepped in f32 as llama.cpp does).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::llama::{LlamaConfig, rope};

/// `out = x / rms(x) · w` row by row; returns each row's `1 / rms` for the backward.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Vec<f32> {
    let d = w.len();
    x.par_chunks_exact(d)
        .zip(out.par_chunks_exact_mut(d))
        .map(|(xr, or)| {
            let ss: f64 = xr.iter().map(|&v| f64::from(v * v)).sum();
            let r = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
            for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
                *o = v * r * g;
            }
            r
        })
        .collect()
}

/// The backward of [`rms_norm`]: `dx += ∂/∂x`, and `dw += ∂/∂w` when asked.
///
/// With `r = (mean(x²) + ε)^-½` and `y = x·r·w`:
/// `∂L/∂xᵢ = r·wᵢ·dyᵢ − xᵢ·r³/d · Σₖ dyₖ·wₖ·xₖ` and `∂L/∂wᵢ = Σ_rows dyᵢ·xᵢ·r`.
pub fn rms_norm_back(
    x: &[f32],
    w: &[f32],
    rinv: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: Option<&mut [f32]>,
) {
    let d = w.len();
    dx.par_chunks_exact_mut(d)
        .zip(x.par_chunks_exact(d))
        .zip(dy.par_chunks_exact(d))
        .zip(rinv)
        .for_each(|(((dxr, xr), dyr), &r)| {
            let dot: f64 = dyr
                .iter()
                .zip(w)
                .zip(xr)
                .map(|((&a, &b), &c)| f64::from(a * b) * f64::from(c))
                .sum();
            let c = (dot * f64::from(r).powi(3) / d as f64) as f32;
            for (((o, &xv), &g), &dv) in dxr.iter_mut().zip(xr).zip(w).zip(dyr) {
                *o += r * g * dv - xv * c;
            }
        });
    if let Some(dw) = dw {
        for ((xr, dyr), &r) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(rinv) {
            for ((o, &xv), &dv) in dw.iter_mut().zip(xr).zip(dyr) {
                *o += dv * xv * r;
            }
        }
    }
}

/// RoPE's (cos, sin) per position and pair, computed as [`rope::apply`] does.
#[derive(Debug, Clone)]
pub struct RopeTable {
    half: usize,
    cs: Vec<(f32, f32)>,
}

impl RopeTable {
    /// Positions `0..n_pos`.
    pub fn new(cfg: &LlamaConfig, n_pos: usize) -> Self {
        let half = cfg.rope_dim / 2;
        let theta_scale = cfg.rope_base.powf(-2.0 / cfg.rope_dim as f32);
        let mut cs = Vec::with_capacity(n_pos * half);
        for p in 0..n_pos {
            let mut theta = p as f32;
            for _ in 0..half {
                let a = cfg.rope_freq_scale * theta;
                cs.push((a.cos(), a.sin()));
                theta *= theta_scale;
            }
        }
        Self { half, cs }
    }

    fn at(&self, pos: usize) -> &[(f32, f32)] {
        &self.cs[pos * self.half..][..self.half]
    }

    /// Rotates every head of each row `t` (of `row_len` values) by position `pos[t]`;
    /// `inverse` rotates back (the backward: the transpose of a rotation is its inverse).
    pub fn apply(
        &self,
        cfg: &LlamaConfig,
        x: &mut [f32],
        row_len: usize,
        pos: &[usize],
        inverse: bool,
    ) {
        x.par_chunks_exact_mut(row_len)
            .zip(pos)
            .for_each(|(row, &p)| {
                let cs = self.at(p);
                let neg: Vec<(f32, f32)>;
                let cs = if inverse {
                    neg = cs.iter().map(|&(c, s)| (c, -s)).collect();
                    &neg[..]
                } else {
                    cs
                };
                for head in row.chunks_exact_mut(cfg.head_dim) {
                    rope::rotate(head, cs, cfg.rope_order);
                }
            });
    }
}

/// `silu(x) = x·σ(x)`.
#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `silu(g)·u` element-wise.
pub fn swiglu(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.par_iter()
        .zip(u)
        .map(|(&g, &u)| g * sigmoid(g) * u)
        .collect()
}

/// The backward of [`swiglu`]: `(dg, du)` from `da`, with
/// `silu'(g) = σ(g)·(1 + g·(1 − σ(g)))`.
pub fn swiglu_back(g: &[f32], u: &[f32], da: &[f32]) -> (Vec<f32>, Vec<f32>) {
    g.par_iter()
        .zip(u)
        .zip(da)
        .map(|((&g, &u), &d)| {
            let s = sigmoid(g);
            (d * u * s * (1.0 + g * (1.0 - s)), d * g * s)
        })
        .unzip()
}

/// Inverted dropout's multipliers for `len` values: 0 with probability `p`, else `1/(1−p)`,
/// from a ChaCha8 stream seeded with `seed` on stream `stream` (one per module), so the
/// backward (or a recomputed forward) regenerates the very same mask.
pub fn dropout_scales(seed: u64, stream: u64, len: usize, p: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let keep = 1.0 / (1.0 - p);
    (0..len)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect()
}

/// A step's dropout seed from the adapter's seed and the step number (splitmix64 finaliser).
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::random::SplitMix64;

    /// Central differences of `f` at `x` along each coordinate, in f64.
    fn numeric(x: &[f32], f: impl Fn(&[f32]) -> f64) -> Vec<f64> {
        let h = 1e-2f32;
        (0..x.len())
            .map(|i| {
                let mut p = x.to_vec();
                p[i] += h;
                let fp = f(&p);
                p[i] = x[i] - h;
                (fp - f(&p)) / f64::from(2.0 * h)
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        for (i, (&a, &b)) in a.iter().zip(b).enumerate() {
            assert!(
                (f64::from(a) - b).abs() <= tol * (1.0 + b.abs()),
                "{i}: analytic {a} vs numeric {b}"
            );
        }
    }

    #[test]
    fn rms_norm_backward_matches_differences() {
        let mut rng = SplitMix64::new(3);
        let (n, d) = (3, 8);
        let x = rng.uniform(n * d, 1.0);
        let w = rng.uniform(d, 1.0);
        let dy = rng.uniform(n * d, 1.0);
        let loss = |x: &[f32], w: &[f32]| {
            let mut y = vec![0f32; n * d];
            rms_norm(x, w, 1e-5, &mut y);
            y.iter()
                .zip(&dy)
                .map(|(a, b)| f64::from(a * b))
                .sum::<f64>()
        };
        let mut y = vec![0f32; n * d];
        let r = rms_norm(&x, &w, 1e-5, &mut y);
        let (mut dx, mut dw) = (vec![0f32; n * d], vec![0f32; d]);
        rms_norm_back(&x, &w, &r, &dy, &mut dx, Some(&mut dw));
        close(&dx, &numeric(&x, |x| loss(x, &w)), 2e-3);
        close(&dw, &numeric(&w, |w| loss(&x, w)), 2e-3);
    }

    #[test]
    fn swiglu_backward_matches_differences() {
        let mut rng = SplitMix64::new(4);
        let g = rng.uniform(16, 4.0);
        let u = rng.uniform(16, 2.0);
        let da = rng.uniform(16, 1.0);
        let loss = |g: &[f32], u: &[f32]| {
            swiglu(g, u)
                .iter()
                .zip(&da)
                .map(|(a, b)| f64::from(a * b))
                .sum::<f64>()
        };
        let (dg, du) = swiglu_back(&g, &u, &da);
        close(&dg, &numeric(&g, |g| loss(g, &u)), 2e-3);
        close(&du, &numeric(&u, |u| loss(&g, u)), 2e-3);
    }

    #[test]
    fn rope_matches_inference_and_inverts() {
        let mut cfg = crate::llama::testutil::tiny_cfg();
        for order in [
            crate::llama::RopeOrder::Normal,
            crate::llama::RopeOrder::NeoX,
        ] {
            cfg.rope_order = order;
            let table = RopeTable::new(&cfg, 10);
            let x = SplitMix64::new(5).uniform(4 * 16, 1.0);
            let mut a = x.clone();
            table.apply(&cfg, &mut a, 16, &[3, 4, 5, 6], false);
            let mut b = x.clone();
            rope::apply(&cfg, cfg.rope_of(0), &mut b, 16, 3);
            assert_eq!(a, b);
            table.apply(&cfg, &mut a, 16, &[3, 4, 5, 6], true);
            for (a, b) in a.iter().zip(&x) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn dropout_is_seeded_and_scaled() {
        let a = dropout_scales(1, 2, 10_000, 0.25);
        assert_eq!(a, dropout_scales(1, 2, 10_000, 0.25));
        assert_ne!(a, dropout_scales(1, 3, 10_000, 0.25));
        let dropped = a.iter().filter(|&&v| v == 0.0).count();
        assert!((2300..2700).contains(&dropped), "{dropped}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    }
}
