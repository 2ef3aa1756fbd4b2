//! The training forward pass: the inference decoder's math over a packed batch, keeping each
//! block's intermediate values for [`super::backward`], then the output head and the
//! cross-entropy loss (whose gradient is formed on the spot, chunk by chunk, so logits are
//! never held for the whole batch).

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use super::linalg::{axpy, f32_matrix, matmul_acc, matmul_t, outer_acc};
use super::ops::{RopeTable, dropout_scales, rms_norm, rms_norm_back, step_seed, swiglu};
use super::{BaseView, LossStats, Params, Sequence, TrainError, TrainOptions, attention};
use crate::llama::{LlamaConfig, Proj};
use crate::lora::LoraAdapter;

/// Target rows whose logits are formed at once (bounds the logits buffer to
/// `HEAD_CHUNK × n_vocab`).
const HEAD_CHUNK: usize = 128;

/// The loss of a batch, forward only (evaluation: no gradients, nothing kept).
pub fn loss(
    base: &BaseView,
    lora: Option<&LoraAdapter>,
    batch: &[Sequence],
    opts: &TrainOptions,
) -> Result<LossStats, TrainError> {
    let pass = Pass::new(base, lora, batch, opts)?;
    let mut x = pass.embed()?;
    for l in 0..pass.cfg.n_layers {
        x = pass.layer_forward(l, &x)?.0;
    }
    let (sum, _) = pass.head(&x, None, None)?;
    pass.stats(sum)
}

/// A batch packed for one pass: all tokens one after the other.
#[derive(Debug)]
pub(crate) struct Packed {
    pub tokens: Vec<u32>,
    /// Each sequence's rows.
    pub seqs: Vec<Range<usize>>,
    /// Each row's position in its sequence.
    pub pos: Vec<usize>,
    /// (row, token it predicts), for rows whose next token is an unmasked target.
    pub targets: Vec<(usize, u32)>,
}

impl Packed {
    fn new(batch: &[Sequence], cfg: &LlamaConfig) -> Result<Self, TrainError> {
        let mut p = Packed {
            tokens: Vec::new(),
            seqs: Vec::new(),
            pos: Vec::new(),
            targets: Vec::new(),
        };
        for (s, seq) in batch.iter().enumerate() {
            let toks = seq.tokens;
            if let Some((i, &token)) = toks
                .iter()
                .enumerate()
                .find(|&(_, &t)| t as usize >= cfg.n_vocab)
            {
                return Err(TrainError::TokenOutOfRange {
                    seq: s,
                    pos: i,
                    token,
                    n_vocab: cfg.n_vocab,
                });
            }
            if let Some(m) = seq.mask
                && m.len() != toks.len()
            {
                return Err(TrainError::MaskLength {
                    seq: s,
                    tokens: toks.len(),
                    mask: m.len(),
                });
            }
            if toks.len() > cfg.context_len {
                return Err(TrainError::TooLong {
                    seq: s,
                    len: toks.len(),
                    context: cfg.context_len,
                });
            }
            let t0 = p.tokens.len();
            for i in 1..toks.len() {
                if seq.mask.is_none_or(|m| m[i]) {
                    p.targets.push((t0 + i - 1, toks[i]));
                }
            }
            p.tokens.extend_from_slice(toks);
            p.pos.extend(0..toks.len());
            p.seqs.push(t0..p.tokens.len());
        }
        if p.targets.is_empty() {
            return Err(TrainError::EmptyBatch);
        }
        Ok(p)
    }
}

/// What one block keeps for its backward (its input is kept separately).
#[derive(Debug)]
pub(crate) struct LayerActs {
    /// 1/rms and normed input of the attention.
    pub rms1: Vec<f32>,
    pub xn1: Vec<f32>,
    /// Queries and keys after RoPE, values.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Attention output (input of `o`).
    pub attn: Vec<f32>,
    /// The residual stream after attention, 1/rms and normed input of the FFN.
    pub x_mid: Vec<f32>,
    pub rms2: Vec<f32>,
    pub xn2: Vec<f32>,
    /// Gate and up projections, and `silu(gate)·up` (input of `down`).
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub act: Vec<f32>,
    /// `dropout(x)·Aᵀ` of each adapted projection, by [`Proj::index`].
    pub lora_u: [Option<Vec<f32>>; 7],
}

/// One pass over a batch: the base, the adapter, the packed batch and per-pass tables.
pub(crate) struct Pass<'a> {
    pub base: &'a BaseView<'a>,
    pub cfg: &'a LlamaConfig,
    pub lora: Option<&'a LoraAdapter>,
    /// Per layer and projection: the adapter module's index.
    modules: Vec<[Option<usize>; 7]>,
    pub packed: Packed,
    rope: RopeTable,
    /// (probability, this step's seed) when dropout applies.
    dropout: Option<(f32, u64)>,
    pub opts: TrainOptions,
}

/// Whether the backward pass implements `cfg`'s architecture (Gemma 3 runs inference only).
pub fn check_trainable(cfg: &LlamaConfig) -> Result<(), TrainError> {
    match cfg.gemma3 {
        Some(_) => Err(TrainError::UnsupportedArch(cfg.arch.clone())),
        None => Ok(()),
    }
}

impl<'a> Pass<'a> {
    pub fn new(
        base: &'a BaseView<'a>,
        lora: Option<&'a LoraAdapter>,
        batch: &[Sequence],
        opts: &TrainOptions,
    ) -> Result<Self, TrainError> {
        let cfg = base.cfg;
        check_trainable(cfg)?;
        let mut modules = vec![[None; 7]; cfg.n_layers];
        if let Some(lora) = lora {
            lora.validate(cfg)?;
            for (i, m) in lora.modules.iter().enumerate() {
                modules[m.layer][m.proj.index()] = Some(i);
            }
        }
        let packed = Packed::new(batch, cfg)?;
        let max_len = packed.seqs.iter().map(|r| r.len()).max().unwrap_or(0);
        let dropout = lora
            .filter(|l| opts.dropout && l.config.dropout > 0.0)
            .map(|l| (l.config.dropout, step_seed(l.config.seed, opts.step)));
        Ok(Self {
            base,
            cfg,
            lora,
            modules,
            packed,
            rope: RopeTable::new(cfg, max_len),
            dropout,
            opts: *opts,
        })
    }

    /// The adapter module of (layer, projection), with its index.
    pub fn module(&self, l: usize, p: Proj) -> Option<(usize, &'a crate::lora::LoraModule)> {
        let i = self.modules[l][p.index()]?;
        self.lora.map(|lora| (i, &lora.modules[i]))
    }

    /// The loss statistics for a summed loss, or [`TrainError::NonFinite`].
    pub fn stats(&self, sum: f64) -> Result<LossStats, TrainError> {
        if !sum.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.opts.step,
                what: format!("the loss ({sum})"),
            });
        }
        let count = self.packed.targets.len();
        Ok(LossStats {
            sum,
            count,
            denominator: self.opts.denominator.unwrap_or(count as f64),
        })
    }

    /// The backward of RoPE on rows of `row_len` values: the inverse rotation.
    pub fn rope_back(&self, dx: &mut [f32], row_len: usize) {
        self.rope
            .apply(self.cfg, dx, row_len, &self.packed.pos, true);
    }

    /// Token embeddings `[N × dim]`.
    pub fn embed(&self) -> Result<Vec<f32>, TrainError> {
        let d = self.cfg.dim;
        let mut x = vec![0f32; self.packed.tokens.len() * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(&self.packed.tokens) {
            self.base.embed.dequantize_row(t as usize, row)?;
        }
        Ok(x)
    }

    /// Dropout multipliers for the LoRA input of (layer, projection), when dropout applies.
    pub fn dropout_scales(&self, l: usize, p: Proj, len: usize) -> Option<Vec<f32>> {
        let (prob, seed) = self.dropout?;
        Some(dropout_scales(seed, (l * 7 + p.index()) as u64, len, prob))
    }

    /// The LoRA input: `x`, with dropout applied in training.
    pub fn lora_input<'x>(&self, l: usize, p: Proj, x: &'x [f32]) -> Cow<'x, [f32]> {
        match self.dropout_scales(l, p, x.len()) {
            None => Cow::Borrowed(x),
            Some(s) => Cow::Owned(x.iter().zip(&s).map(|(a, b)| a * b).collect()),
        }
    }

    /// `x·Wᵀ` of projection `p` of block `l`, plus `scale·(dropout(x)·Aᵀ)·Bᵀ` when adapted
    /// (keeping `dropout(x)·Aᵀ` in `lora_u`).
    fn project(
        &self,
        l: usize,
        p: Proj,
        x: &[f32],
        lora_u: &mut [Option<Vec<f32>>; 7],
    ) -> Result<Vec<f32>, TrainError> {
        let w = self.base.layers[l].mat(p);
        let n = x.len() / w.cols;
        let mut y = vec![0f32; n * w.rows];
        matmul_t(w, x, &mut y)?;
        if let Some((_, m)) = self.module(l, p) {
            let xd = self.lora_input(l, p, x);
            let mut u = vec![0f32; n * m.rank];
            matmul_t(&f32_matrix(&m.a, m.rank, m.in_dim), &xd, &mut u)?;
            let mut z = vec![0f32; n * m.out_dim];
            matmul_t(&f32_matrix(&m.b, m.out_dim, m.rank), &u, &mut z)?;
            axpy(&mut y, self.lora.map_or(0.0, LoraAdapter::scale), &z);
            lora_u[p.index()] = Some(u);
        }
        Ok(y)
    }

    /// Block `l` on input `x`: its output and what its backward needs.
    pub fn layer_forward(&self, l: usize, x: &[f32]) -> Result<(Vec<f32>, LayerActs), TrainError> {
        let cfg = self.cfg;
        let lw = &self.base.layers[l];
        let pos = &self.packed.pos;
        let mut lora_u: [Option<Vec<f32>>; 7] = Default::default();

        let mut xn1 = vec![0f32; x.len()];
        let rms1 = rms_norm(x, lw.attn_norm, cfg.rms_eps, &mut xn1);
        let mut q = self.project(l, Proj::Q, &xn1, &mut lora_u)?;
        let mut k = self.project(l, Proj::K, &xn1, &mut lora_u)?;
        let v = self.project(l, Proj::V, &xn1, &mut lora_u)?;
        self.rope.apply(cfg, &mut q, cfg.q_dim(), pos, false);
        self.rope.apply(cfg, &mut k, cfg.kv_dim(), pos, false);
        let attn = attention::forward(cfg, &self.packed.seqs, &q, &k, &v);
        let o = self.project(l, Proj::O, &attn, &mut lora_u)?;
        let mut x_mid = x.to_vec();
        super::linalg::add(&mut x_mid, &o);

        let mut xn2 = vec![0f32; x.len()];
        let rms2 = rms_norm(&x_mid, lw.ffn_norm, cfg.rms_eps, &mut xn2);
        let gate = self.project(l, Proj::Gate, &xn2, &mut lora_u)?;
        let up = self.project(l, Proj::Up, &xn2, &mut lora_u)?;
        let act = swiglu(&gate, &up);
        let down = self.project(l, Proj::Down, &act, &mut lora_u)?;
        let mut out = x_mid.clone();
        super::linalg::add(&mut out, &down);
        Ok((
            out,
            LayerActs {
                rms1,
                xn1,
                q,
                k,
                v,
                attn,
                x_mid,
                rms2,
                xn2,
                gate,
                up,
                act,
                lora_u,
            },
        ))
    }

    /// Final norm, output head and cross-entropy over the target rows of `x` (the last
    /// block's output). Returns the summed loss and, when `inv_denom` is given, the gradient
    /// of `sum · inv_denom` with respect to `x` (also accumulating the output head's and final
    /// norm's gradients into `base_grads`).
    pub fn head(
        &self,
        x: &[f32],
        inv_denom: Option<f64>,
        mut base_grads: Option<&mut Params>,
    ) -> Result<(f64, Vec<f32>), TrainError> {
        let (d, nv) = (self.cfg.dim, self.cfg.n_vocab);
        let mut sum = 0f64;
        let mut dx = if inv_denom.is_some() {
            vec![0f32; x.len()]
        } else {
            Vec::new()
        };
        for chunk in self.packed.targets.chunks(HEAD_CHUNK) {
            let c = chunk.len();
            let mut xs = vec![0f32; c * d];
            for (dst, &(t, _)) in xs.chunks_exact_mut(d).zip(chunk) {
                dst.copy_from_slice(&x[t * d..][..d]);
            }
            let mut xf = vec![0f32; c * d];
            let rinv = rms_norm(&xs, self.base.output_norm, self.cfg.rms_eps, &mut xf);
            let mut logits = vec![0f32; c * nv];
            matmul_t(&self.base.output, &xf, &mut logits)?;
            // −log softmax(row)[target] in f64; the row becomes ∂/∂logits when asked.
            let nll: Vec<f64> = logits
                .par_chunks_mut(nv)
                .zip(chunk)
                .map(|(row, &(_, target))| {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let se: f64 = row.iter().map(|&l| f64::from(l - max).exp()).sum();
                    let lse = f64::from(max) + se.ln();
                    let nll = lse - f64::from(row[target as usize]);
                    if let Some(inv) = inv_denom {
                        for l in row.iter_mut() {
                            *l = ((f64::from(*l) - lse).exp() * inv) as f32;
                        }
                        row[target as usize] -= inv as f32;
                    }
                    nll
                })
                .collect();
            sum += nll.iter().sum::<f64>();
            if inv_denom.is_none() {
                continue;
            }
            let mut dxf = vec![0f32; c * d];
            matmul_acc(&self.base.output, &logits, &mut dxf)?;
            let mut dnorm = None;
            if let Some(g) = base_grads.as_deref_mut() {
                let head = match g.output.as_mut() {
                    Some(o) => o,
                    None => &mut g.embed,
                };
                outer_acc(&logits, &xf, nv, d, head);
                dnorm = Some(&mut g.output_norm[..]);
            }
            let mut dxs = vec![0f32; c * d];
            rms_norm_back(&xs, self.base.output_norm, &rinv, &dxf, &mut dxs, dnorm);
            for (src, &(t, _)) in dxs.chunks_exact(d).zip(chunk) {
                dx[t * d..][..d].copy_from_slice(src);
            }
        }
        Ok((sum, dx))
    }
}
