//! Causal grouped-query attention over the KV cache.

use half::f16;

use super::kv_cache::HeadKv;
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
        #[target_feature(enable = "avx2,fma,f16c")]
        fn with_fma(
            cfg: &LlamaConfig,
            cache: &KvCache,
            l: usize,
            p: usize,
            h: usize,
            q: &[f32],
            out: &mut [f32],
        ) {
            head_of_type(cfg, cache, l, p, h, q, out);
        }
        // SAFETY: `use_fma` holds only on CPUs with AVX2, FMA and F16C.
        #[allow(unsafe_code)]
        return unsafe { with_fma(cfg, cache, l, p, h, q, out) };
    }
    head_of_type(cfg, cache, l, p, h, q, out);
}

#[inline(always)]
fn head_of_type(
    cfg: &LlamaConfig,
    cache: &KvCache,
    l: usize,
    p: usize,
    h: usize,
    q: &[f32],
    out: &mut [f32],
) {
    let window = cfg.window_of(l);
    match cache.head(l, h / (cfg.n_heads / cfg.n_kv_heads)) {
        HeadKv::F32(k, v) => head_impl(cfg, cache, (p, window), q, k, v, out),
        HeadKv::F16(k, v) => head_impl(cfg, cache, (p, window), q, k, v, out),
    }
}

#[inline(always)]
fn head_impl<E: KvValue>(
    cfg: &LlamaConfig,
    cache: &KvCache,
    (p, window): (usize, Option<usize>),
    q: &[f32],
    keys: &[E],
    values: &[E],
    out: &mut [f32],
) {
    let hd = cfg.head_dim;
    // Without a window these are 0..=p; with one, the sinks and then the recent positions.
    // A local layer (Gemma 3) sees only the last `window` of them (llama.cpp's
    // LLAMA_SWA_TYPE_STANDARD mask).
    let visible: Vec<usize> = cache
        .visible(p)
        .filter(|&j| window.is_none_or(|w| p - j < w))
        .collect();
    let scale = cfg.attn_scale();
    let key = |j: usize| &keys[cache.slot(j) * hd..][..hd];
    let value = |j: usize| &values[cache.slot(j) * hd..][..hd];
    let mut w = Vec::with_capacity(visible.len());
    for &j in &visible {
        w.push(E::dot(key(j), q) * scale);
    }
    ggml_math::soft_max(&mut w, visible[0]);
    // acc[lane][d]: the sgemm accumulator of output d, lane = position mod 8. Masked positions
    // have weight 0 and leave it unchanged, so only the visible ones are visited.
    let mut acc = vec![0f32; 8 * hd];
    for (&j, &wj) in visible.iter().zip(&w) {
        E::axpy(wj, value(j), &mut acc[j % 8 * hd..][..hd]);
    }
    for (d, o) in out.iter_mut().enumerate() {
        let a = |lane: usize| acc[lane * hd + d];
        *o = ggml_math::hsum8(&[a(0), a(1), a(2), a(3), a(4), a(5), a(6), a(7)]);
    }
}

/// A stored key or value element ([`crate::llama::KvType`]). An f16 cache runs the f32
/// arithmetic on the (exactly) widened values.
trait KvValue: Copy {
    /// `ggml_vec_dot_f32` of a key and a query ([`ggml_math::vec_dot_f32`]).
    fn dot(k: &[Self], q: &[f32]) -> f32;
    /// `acc[d] = fma(v[d], w, acc[d])`.
    fn axpy(w: f32, v: &[Self], acc: &mut [f32]);
}

impl KvValue for f32 {
    #[inline(always)]
    fn dot(k: &[f32], q: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if k.len() == q.len() && k.len().is_multiple_of(32) && ggml_math::use_fma() {
            // SAFETY: `use_fma` holds only on CPUs with AVX2, FMA and F16C; lengths checked.
            #[allow(unsafe_code)]
            return unsafe { simd::dot(k.as_ptr(), q, |p| simd::load_f32(p)) };
        }
        ggml_math::vec_dot_f32(k, q)
    }

    #[inline(always)]
    fn axpy(w: f32, v: &[f32], acc: &mut [f32]) {
        for (a, &v) in acc.iter_mut().zip(v) {
            *a = v.mul_add(w, *a);
        }
    }
}

impl KvValue for f16 {
    #[inline(always)]
    fn dot(k: &[f16], q: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if k.len() == q.len() && k.len().is_multiple_of(32) && ggml_math::use_fma() {
            // SAFETY: as for f32.
            #[allow(unsafe_code)]
            return unsafe { simd::dot(k.as_ptr(), q, |p| simd::load_f16(p)) };
        }
        let k: Vec<f32> = k.iter().map(|v| v.to_f32()).collect();
        ggml_math::vec_dot_f32(&k, q)
    }

    #[inline(always)]
    fn axpy(w: f32, v: &[f16], acc: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if v.len() == acc.len() && v.len().is_multiple_of(8) && ggml_math::use_fma() {
            // SAFETY: as for f32; lengths checked.
            #[allow(unsafe_code)]
            return unsafe { simd::axpy_f16(w, v, acc) };
        }
        for (a, v) in acc.iter_mut().zip(v) {
            *a = v.to_f32().mul_add(w, *a);
        }
    }
}

/// The key dot product and the f16 value update in AVX2 registers: the same four 8-lane FMA
/// accumulators and the same reduction as [`ggml_math::vec_dot_f32`], so the same bits, without
/// the emulation's round trip through memory.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd {
    use std::arch::x86_64::*;

    use half::f16;

    /// # Safety
    /// AVX2 and FMA; `p` points at 8 readable floats.
    #[inline(always)]
    pub unsafe fn load_f32(p: *const f32) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// # Safety
    /// F16C; `p` points at 8 readable halves.
    #[inline(always)]
    pub unsafe fn load_f16(p: *const f16) -> __m256 {
        // SAFETY: the caller's contract; f16 is 2 bytes, so 8 of them are 16.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    /// # Safety
    /// AVX2, FMA and F16C; `k` points at `q.len()` readable elements, a multiple of 32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot<E>(k: *const E, q: &[f32], load: impl Fn(*const E) -> __m256) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (c, qc) in q.chunks_exact(32).enumerate() {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: element 32c + 8j + 8 <= q.len(), inside both rows.
                let (kv, qv) = unsafe {
                    (
                        load(k.add(32 * c + 8 * j)),
                        _mm256_loadu_ps(qc.as_ptr().add(8 * j)),
                    )
                };
                *a = _mm256_fmadd_ps(kv, qv, *a);
            }
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
        let t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let t = _mm_hadd_ps(t, t);
        _mm_cvtss_f32(_mm_hadd_ps(t, t))
    }

    /// `acc[d] = fma(v[d], w, acc[d])` for f16 `v`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `v.len() == acc.len()`, a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(w: f32, v: &[f16], acc: &mut [f32]) {
        let wv = _mm256_set1_ps(w);
        for (vc, ac) in v.chunks_exact(8).zip(acc.chunks_exact_mut(8)) {
            // SAFETY: 8 halves and 8 floats per chunk.
            unsafe {
                let x = load_f16(vc.as_ptr());
                let a = _mm256_loadu_ps(ac.as_ptr());
                _mm256_storeu_ps(ac.as_mut_ptr(), _mm256_fmadd_ps(x, wv, a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register versions of the key dot product (f32 and f16 keys) give the emulation's
    /// bits on the widened values.
    #[test]
    fn key_dots_equal_the_emulation_bit_for_bit() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2f32.powi((state % 9) as i32 - 4)
        };
        for n in [32, 64, 96, 128] {
            for _ in 0..200 {
                let (k, q): (Vec<f32>, Vec<f32>) = (0..n).map(|_| (next(), next())).unzip();
                let (got, want) = (f32::dot(&k, &q), ggml_math::vec_dot_f32(&k, &q));
                assert_eq!(got.to_bits(), want.to_bits(), "n = {n}: {got} vs {want}");
                let k16: Vec<f16> = k.iter().map(|&v| f16::from_f32(v)).collect();
                let wide: Vec<f32> = k16.iter().map(|v| v.to_f32()).collect();
                let (got, want) = (f16::dot(&k16, &q), ggml_math::vec_dot_f32(&wide, &q));
                assert_eq!(got.to_bits(), want.to_bits(), "n = {n}: {got} vs {want}");
            }
        }
    }
}
