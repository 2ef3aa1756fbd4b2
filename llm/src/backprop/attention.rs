//! Causal grouped-query attention over packed sequences, and its backward.
//!
//! Rows of `q` `[N × n_heads·hd]`, `k`, `v` `[N × n_kv_heads·hd]` are the tokens of every
//! sequence of the batch one after the other; each sequence attends only within itself.
//! Query head `h` reads kv head `h / (n_heads / n_kv_heads)`. The backward recomputes the
//! attention weights from `q` and `k` instead of keeping them (they are `L²` per head).

use std::ops::Range;

use rayon::prelude::*;

use super::linalg::axpy;
use crate::kernels::dot_f32;
use crate::llama::LlamaConfig;

/// `softmax(q_i · k_j / √hd)` for `j ≤ i` of one query row, into `p` (length `i + 1`).
fn weights(q: &[f32], keys: impl Iterator<Item = impl AsRef<[f32]>>, scale: f32, p: &mut Vec<f32>) {
    p.clear();
    p.extend(keys.map(|k| dot_f32(q, k.as_ref()) * scale));
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in p.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in p.iter_mut() {
        *v *= inv;
    }
}

/// The attention output `[N × n_heads·hd]`.
pub fn forward(
    cfg: &LlamaConfig,
    seqs: &[Range<usize>],
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Vec<f32> {
    let (qd, kvd, hd, nh) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim, cfg.n_heads);
    let group = nh / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..seqs.len())
        .flat_map(|s| (0..nh).map(move |h| (s, h)))
        .collect();
    let outs: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(s, h)| {
            let rows = seqs[s].clone();
            let g = h / group;
            let key = |t: usize| &k[t * kvd + g * hd..][..hd];
            let value = |t: usize| &v[t * kvd + g * hd..][..hd];
            let mut out = vec![0f32; rows.len() * hd];
            let mut p = Vec::new();
            for (i, o) in rows.clone().zip(out.chunks_exact_mut(hd)) {
                weights(
                    &q[i * qd + h * hd..][..hd],
                    (rows.start..=i).map(key),
                    scale,
                    &mut p,
                );
                for (j, &pj) in (rows.start..=i).zip(&p) {
                    axpy(o, pj, value(j));
                }
            }
            out
        })
        .collect();
    let mut attn = vec![0f32; q.len()];
    for (&(s, h), out) in tasks.iter().zip(&outs) {
        for (t, o) in seqs[s].clone().zip(out.chunks_exact(hd)) {
            attn[t * qd + h * hd..][..hd].copy_from_slice(o);
        }
    }
    attn
}

/// Gradients `(dq, dk, dv)` of the attention inputs from the output's gradient `dout`.
///
/// With `p = softmax(s)`, `s_ij = q_i·k_j/√hd`, `o_i = Σ_j p_ij v_j`:
/// `dv_j = Σ_i p_ij do_i`, `dp_ij = do_i·v_j`, `ds_ij = p_ij (dp_ij − Σ_k p_ik dp_ik)`,
/// `dq_i = Σ_j ds_ij k_j/√hd`, `dk_j = Σ_i ds_ij q_i/√hd` (kv gradients summed over the
/// query heads of their group).
pub fn backward(
    cfg: &LlamaConfig,
    seqs: &[Range<usize>],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (qd, kvd, hd, nkv) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim, cfg.n_kv_heads);
    let group = cfg.n_heads / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..seqs.len())
        .flat_map(|s| (0..nkv).map(move |g| (s, g)))
        .collect();
    // Per task: dq of the group's heads [L × group·hd], dk and dv [L × hd].
    let outs: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(s, g)| {
            let rows = seqs[s].clone();
            let (n, t0) = (rows.len(), rows.start);
            let key = |t: usize| &k[t * kvd + g * hd..][..hd];
            let value = |t: usize| &v[t * kvd + g * hd..][..hd];
            let (mut dq, mut dk, mut dv) = (
                vec![0f32; n * group * hd],
                vec![0f32; n * hd],
                vec![0f32; n * hd],
            );
            let (mut p, mut dp) = (Vec::new(), Vec::new());
            for hh in 0..group {
                let h = g * group + hh;
                for i in rows.clone() {
                    let qi = &q[i * qd + h * hd..][..hd];
                    let doi = &dout[i * qd + h * hd..][..hd];
                    weights(qi, (t0..=i).map(key), scale, &mut p);
                    dp.clear();
                    dp.extend((t0..=i).map(|j| dot_f32(doi, value(j))));
                    let pd: f32 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                    let dqi = &mut dq[((i - t0) * group + hh) * hd..][..hd];
                    for (j, (&pj, &dpj)) in (t0..=i).zip(p.iter().zip(&dp)) {
                        let ds = pj * (dpj - pd) * scale;
                        axpy(dqi, ds, key(j));
                        axpy(&mut dk[(j - t0) * hd..][..hd], ds, qi);
                        axpy(&mut dv[(j - t0) * hd..][..hd], pj, doi);
                    }
                }
            }
            (dq, dk, dv)
        })
        .collect();
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; q.len()],
        vec![0f32; k.len()],
        vec![0f32; v.len()],
    );
    for (&(s, g), (tq, tk, tv)) in tasks.iter().zip(&outs) {
        for (r, t) in seqs[s].clone().enumerate() {
            dq[t * qd + g * group * hd..][..group * hd]
                .copy_from_slice(&tq[r * group * hd..][..group * hd]);
            dk[t * kvd + g * hd..][..hd].copy_from_slice(&tk[r * hd..][..hd]);
            dv[t * kvd + g * hd..][..hd].copy_from_slice(&tv[r * hd..][..hd]);
        }
    }
    (dq, dk, dv)
}
