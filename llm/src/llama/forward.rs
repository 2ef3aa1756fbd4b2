//! The forward pass: embeddings → blocks (RMSNorm, attention with RoPE and GQA, SwiGLU) →
//! final norm → logits, for a batch of consecutive tokens of one sequence; with Gemma 3's
//! additions ([`super::gemma3`]) for `gemma3` files.

use std::collections::HashMap;

use super::{KvCache, Linear, LlamaError, LlamaModel, Proj, attention, ggml_math, rope};
use crate::kernels::{Acts, MatJob, matmul_into, matmul_many};
use crate::quant::GgmlType;

/// Which positions to return logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (filling the cache).
    None,
    /// The last token's only (generation).
    Last,
    /// Every token's (scoring, perplexity).
    All,
}

/// Prompt tokens processed per pass, bounding activation memory.
const MAX_BATCH: usize = 256;

impl LlamaModel {
    /// Runs `tokens` at the cache's next positions, appends their keys and values, and returns
    /// logits as `[rows × n_vocab]` (rows per `want`).
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>, LlamaError> {
        let n_vocab = self.cfg.n_vocab;
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(LlamaError::TokenOutOfRange { token, n_vocab });
        }
        let needed = cache.pos() + tokens.len();
        if needed > cache.capacity() {
            return Err(LlamaError::ContextFull {
                needed,
                capacity: cache.capacity(),
            });
        }
        let mut logits = Vec::new();
        let n_batches = tokens.len().div_ceil(MAX_BATCH);
        for (b, batch) in tokens.chunks(MAX_BATCH).enumerate() {
            let want_here = match want {
                Logits::Last if b + 1 < n_batches => Logits::None,
                w => w,
            };
            logits.extend(self.forward_batch(cache, batch, want_here)?);
        }
        Ok(logits)
    }

    fn forward_batch(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>, LlamaError> {
        let cfg = &self.cfg;
        let file = self.file();
        let n = tokens.len();
        let pos0 = cache.pos();
        cache.reserve(pos0 + n);

        let embed = self.weights.embed.matrix(file);
        let mut x = vec![0f32; n * cfg.dim];
        for (row, &t) in x.chunks_exact_mut(cfg.dim).zip(tokens) {
            embed.dequantize_row(t as usize, row)?;
        }
        if cfg.gemma3.is_some() {
            let scale = (cfg.dim as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }

        let mut xn = vec![0f32; n * cfg.dim];
        for (l, layer) in self.weights.layers.iter().enumerate() {
            let gemma = layer.gemma.as_ref();
            rms_norm(&x, &layer.attn_norm, cfg.rms_eps, &mut xn);
            let [mut q, mut k, mut v] = self.project_many([&layer.q, &layer.k, &layer.v], &xn);
            self.add_adapter(l, Proj::Q, &xn, &mut q);
            self.add_adapter(l, Proj::K, &xn, &mut k);
            self.add_adapter(l, Proj::V, &xn, &mut v);
            if let Some(gn) = gemma {
                q = normed(&q, &gn.q_norm, cfg.rms_eps);
                k = normed(&k, &gn.k_norm, cfg.rms_eps);
            }
            rope::apply(cfg, cfg.rope_of(l), &mut q, cfg.q_dim(), pos0);
            rope::apply(cfg, cfg.rope_of(l), &mut k, cfg.kv_dim(), pos0);
            if let Some(g) = &cfg.gemma3 {
                q.iter_mut().for_each(|v| *v *= g.query_scale);
            }
            let attn = attention::attend(cfg, cache, l, &q, &k, &v);
            let mut o = self.project(&layer.o, &attn, &mut Prepared::default());
            self.add_adapter(l, Proj::O, &attn, &mut o);
            if let Some(gn) = gemma {
                o = normed(&o, &gn.post_attn_norm, cfg.rms_eps);
            }
            add(&mut x, &o);

            rms_norm(&x, &layer.ffn_norm, cfg.rms_eps, &mut xn);
            let [mut g, mut u] = self.project_many([&layer.gate, &layer.up], &xn);
            self.add_adapter(l, Proj::Gate, &xn, &mut g);
            self.add_adapter(l, Proj::Up, &xn, &mut u);
            let glu = if gemma.is_some() {
                ggml_math::geglu_row
            } else {
                swiglu
            };
            for (g, u) in g
                .chunks_exact_mut(cfg.ffn_dim)
                .zip(u.chunks_exact(cfg.ffn_dim))
            {
                glu(g, u);
            }
            let mut d = self.project(&layer.down, &g, &mut Prepared::default());
            self.add_adapter(l, Proj::Down, &g, &mut d);
            if let Some(gn) = gemma {
                d = normed(&d, &gn.post_ffn_norm, cfg.rms_eps);
            }
            add(&mut x, &d);
        }
        cache.advance(n);

        let rows: &[f32] = match want {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => &x[(n - 1) * cfg.dim..],
            Logits::All => &x,
        };
        let mut normed = vec![0f32; rows.len()];
        rms_norm(rows, &self.weights.output_norm, cfg.rms_eps, &mut normed);
        let mut logits = self.project(&self.weights.output, &normed, &mut Prepared::default());
        if let Some(cap) = cfg.gemma3.as_ref().and_then(|g| g.final_logit_softcap) {
            // ggml: scale by 1/cap, tanh, scale by cap.
            let inv = 1.0 / cap;
            logits.iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
        }
        Ok(logits)
    }

    /// `input · Wᵀ`, preparing the activations once per weight format.
    fn project(&self, w: &Linear, input: &[f32], prepared: &mut Prepared) -> Vec<f32> {
        let m = w.matrix(self.file());
        let acts = prepared
            .entry(m.ty)
            .or_insert_with(|| Acts::prepare(m.ty, input, m.cols));
        let mut out = vec![0f32; input.len() / m.cols * m.rows];
        matmul_into(&m, acts, &mut out);
        out
    }

    /// `input · Wᵀ` for several matrices sharing an input (q, k, v; gate, up): activations
    /// prepared once per weight format, and all products in one parallel region.
    fn project_many<const N: usize>(&self, ws: [&Linear; N], input: &[f32]) -> [Vec<f32>; N] {
        let ms = ws.map(|w| w.matrix(self.file()));
        let mut prepared: Vec<(GgmlType, Acts)> = Vec::with_capacity(N);
        for m in &ms {
            if !prepared.iter().any(|(ty, _)| *ty == m.ty) {
                prepared.push((m.ty, Acts::prepare(m.ty, input, m.cols)));
            }
        }
        let mut outs = ms.map(|m| vec![0f32; input.len() / m.cols * m.rows]);
        let mut jobs: Vec<MatJob> = ms
            .iter()
            .zip(&mut outs)
            .map(|(m, out)| MatJob {
                w: *m,
                acts: &prepared
                    .iter()
                    .find(|(ty, _)| *ty == m.ty)
                    .expect("prepared")
                    .1,
                out,
            })
            .collect();
        matmul_many(&mut jobs);
        outs
    }
}

/// Activations of one input, prepared per weight format.
type Prepared = HashMap<GgmlType, Acts>;

/// `out = x / rms(x) * w`, row by row (squares in f32 summed in f64, as ggml does).
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f64 = xr.iter().map(|&v| f64::from(v * v)).sum();
        let scale = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// [`rms_norm`] of `x` (rows of `w.len()`) into a new vector.
fn normed(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    rms_norm(x, w, eps, &mut out);
    out
}

/// `g ← silu(g)·u` for one row, as ggml's `ggml_vec_swiglu_f32` (its vectorized `expf`).
fn swiglu(g: &mut [f32], u: &[f32]) {
    ggml_math::swiglu_row(g, u);
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
