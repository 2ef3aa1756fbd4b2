//! Causal grouped-query attention over the KV cache.

use super::{KvCache, LlamaConfig, ggml_math};
use crate::kernels::pool;

/// Appends the batch's keys and values to layer `l` of the cache and returns the attention
/// output `[n × q_dim]` for queries `q` at positions `cache.pos()..`.
pub fn attend(
    cfg: &LlamaConfig,
    cache: &mut KvCache,
    l: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Vec<f32> {
    let (q_dim, kv_dim, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let n = q.len() / q_dim;
    let pos0 = cache.pos();
    let mut out = vec![0f32; q.len()];
    let store_token = |cache: &mut KvCache, t: usize| {
        let (kt, vt) = (&k[t * kv_dim..][..kv_dim], &v[t * kv_dim..][..kv_dim]);
        cache.store(l, pos0 + t, kt, vt);
    };
    let head_of = |cache: &KvCache, t: usize, h: usize, o: &mut [f32]| {
        head(
            cfg,
            cache,
            l,
            pos0 + t,
            h,
            &q[t * q_dim + h * hd..][..hd],
            o,
        );
    };
    if cache.fits_without_wrap(n) {
        (0..n).for_each(|t| store_token(cache, t));
        let cache = &*cache;
        pool::for_each_chunk(&mut out, hd, &|i, o| {
            head_of(cache, i / cfg.n_heads, i % cfg.n_heads, o);
        });
    } else {
        // The ring would overwrite slots earlier tokens of the batch still see: one at a time.
        for t in 0..n {
            store_token(cache, t);
            let cache = &*cache;
            pool::for_each_chunk(&mut out[t * q_dim..][..q_dim], hd, &|h, o| {
                head_of(cache, t, h, o);
            });
        }
    }
    out
}

/// One query head at position `p`: softmax(q·Kᵀ / √d) · V over the visible positions, in the
/// arithmetic of llama.cpp's batched CPU path (f32 KV cache, no flash attention), so that
/// prompt logits match it bit for bit:
/// - KQ is `ggml_vec_dot_f32` per key (Q is a permuted view there, which keeps llamafile's
///   sgemm out);
/// - the softmax is `ggml_compute_forward_soft_max_f32` ([`ggml_math::soft_max`]);
/// - KQV is llamafile's tinyBLAS sgemm over the transposed V cache: for each output one
///   8-lane FMA accumulator, lane = position mod 8, then [`ggml_math::hsum8`].
///
/// (llama.cpp's single-token path computes KQV with `ggml_vec_dot_f32` instead and so differs
/// from its own batched results in the last bits; we follow the batched path throughout.)
fn head(
    cfg: &LlamaConfig,
    cache: &KvCache,
    l: usize,
    p: usize,
    h: usize,
    q: &[f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if ggml_math::use_fma() {
        #[target_feature(enable = "avx2,fma")]
        fn with_fma(
            cfg: &LlamaConfig,
            cache: &KvCache,
            l: usize,
            p: usize,
            h: usize,
            q: &[f32],
            out: &mut [f32],
        ) {
            head_impl(cfg, cache, l, p, h, q, out);
        }
        // SAFETY: `use_fma` holds only on CPUs with AVX2 and FMA.
        #[allow(unsafe_code)]
        return unsafe { with_fma(cfg, cache, l, p, h, q, out) };
    }
    head_impl(cfg, cache, l, p, h, q, out);
}

#[inline(always)]
fn head_impl(
    cfg: &LlamaConfig,
    cache: &KvCache,
    l: usize,
    p: usize,
    h: usize,
    q: &[f32],
    out: &mut [f32],
) {
    let hd = cfg.head_dim;
    let g = h / (cfg.n_heads / cfg.n_kv_heads);
    let (keys, values) = cache.head(l, g);
    // Without a window these are 0..=p; with one, the sinks and then the recent positions.
    let visible: Vec<usize> = cache.visible(p).collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let key = |j: usize| &keys[cache.slot(j) * hd..][..hd];
    let value = |j: usize| &values[cache.slot(j) * hd..][..hd];
    // Plain loops (no iterator closures) so that everything inlines into the FMA variant.
    let mut w = Vec::with_capacity(visible.len());
    for &j in &visible {
        w.push(ggml_math::vec_dot_f32(key(j), q) * scale);
    }
    ggml_math::soft_max(&mut w, visible[0]);
    // acc[lane][d]: the sgemm accumulator of output d, lane = position mod 8. Masked positions
    // have weight 0 and leave it unchanged, so only the visible ones are visited.
    let mut acc = vec![0f32; 8 * hd];
    for (&j, &wj) in visible.iter().zip(&w) {
        let lane = &mut acc[j % 8 * hd..][..hd];
        for (a, &v) in lane.iter_mut().zip(value(j)) {
            *a = v.mul_add(wj, *a);
        }
    }
    for (d, o) in out.iter_mut().enumerate() {
        let a = |lane: usize| acc[lane * hd + d];
        *o = ggml_math::hsum8(&[a(0), a(1), a(2), a(3), a(4), a(5), a(6), a(7)]);
    }
}
