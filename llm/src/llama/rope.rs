//! Rotary position embeddings, in llama.cpp's arithmetic (angles stepped in f32).

use super::{LlamaConfig, RopeOrder};

/// Rotates each `head_dim` slice of `x` (one row per position `pos0 + t`) in place, with a
/// layer's RoPE `(base, position scale)` ([`LlamaConfig::rope_of`]).
pub fn apply(
    cfg: &LlamaConfig,
    (base, freq_scale): (f32, f32),
    x: &mut [f32],
    row_len: usize,
    pos0: usize,
) {
    let half = cfg.rope_dim / 2;
    let theta_scale = base.powf(-2.0 / cfg.rope_dim as f32);
    let mut cs = vec![(0f32, 0f32); half];
    for (t, row) in x.chunks_exact_mut(row_len).enumerate() {
        let mut theta = (pos0 + t) as f32;
        for c in cs.iter_mut() {
            let a = freq_scale * theta;
            *c = (a.cos(), a.sin());
            theta *= theta_scale;
        }
        for head in row.chunks_exact_mut(cfg.head_dim) {
            rotate(head, &cs, cfg.rope_order);
        }
    }
}

/// Rotates one head by the angles `cs` = (cos, sin) of each pair.
pub fn rotate(head: &mut [f32], cs: &[(f32, f32)], order: RopeOrder) {
    let half = cs.len();
    for (i, &(c, s)) in cs.iter().enumerate() {
        let (a, b) = match order {
            RopeOrder::Normal => (2 * i, 2 * i + 1),
            RopeOrder::NeoX => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        // As ggml's `rotate_pairs` compiled by GCC (`-ffp-contract=fast`, FMA): the first
        // product of each line fused with the rounded second one.
        head[a] = x0.mul_add(c, -(x1 * s));
        head[b] = x0.mul_add(s, x1 * c);
    }
}
