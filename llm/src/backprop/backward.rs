//! The backward pass: from the loss's gradient at the last block's output back through every
//! block to the embeddings, accumulating the gradients of the LoRA factors (and, in the
//! full-parameter mode, of every base weight).

use super::forward::{LayerActs, Pass};
use super::linalg::{add, f32_matrix, matmul_acc, outer_acc};
use super::ops::{rms_norm_back, swiglu_back};
use super::{BaseView, Grads, LossStats, Params, Sequence, TrainError, TrainOptions, attention};
use crate::llama::Proj;
use crate::lora::LoraAdapter;

/// The loss of a batch and its gradients with respect to every LoRA factor of `lora` (and
/// every base weight with [`TrainOptions::base_grads`]).
///
/// The loss is `Σ nll / denominator` over the targets (the denominator is their number unless
/// [`TrainOptions::denominator`] says otherwise). A non-finite loss is
/// [`TrainError::NonFinite`] naming `opts.step`.
pub fn loss_and_grads(
    base: &BaseView,
    lora: Option<&LoraAdapter>,
    batch: &[Sequence],
    opts: &TrainOptions,
) -> Result<(LossStats, Grads), TrainError> {
    let pass = Pass::new(base, lora, batch, opts)?;
    let cfg = pass.cfg;
    let mut x = pass.embed()?;
    let mut inputs = Vec::with_capacity(cfg.n_layers);
    let mut acts = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let (out, a) = pass.layer_forward(l, &x)?;
        acts.push((!opts.checkpoint).then_some(a));
        inputs.push(std::mem::replace(&mut x, out));
    }
    let count = pass.packed.targets.len();
    let denominator = opts.denominator.unwrap_or(count as f64);
    let mut grads = Grads::zeros(lora, opts.base_grads.then(|| Params::zeros(cfg, base.tied)));
    let (sum, mut dx) = pass.head(&x, Some(1.0 / denominator), grads.base.as_mut())?;
    let stats = pass.stats(sum)?;
    drop(x);

    for l in (0..cfg.n_layers).rev() {
        let input = inputs.pop().expect("one input per layer");
        let a = match acts.pop().flatten() {
            Some(a) => a,
            None => pass.layer_forward(l, &input)?.1,
        };
        pass.layer_backward(l, &input, &a, &mut dx, &mut grads)?;
    }
    if let Some(g) = grads.base.as_mut() {
        let d = cfg.dim;
        for (&t, dxr) in pass.packed.tokens.iter().zip(dx.chunks_exact(d)) {
            add(&mut g.embed[t as usize * d..][..d], dxr);
        }
    }
    Ok((stats, grads))
}

impl Pass<'_> {
    /// The backward of [`Pass::project`]: `dx += dy·W` (+ the LoRA path), with the gradients
    /// of A and B (and of W in the full-parameter mode). `x` is the projection's input, `u`
    /// its kept `dropout(x)·Aᵀ`.
    #[allow(clippy::too_many_arguments)]
    fn project_back(
        &self,
        l: usize,
        p: Proj,
        x: &[f32],
        u: Option<&[f32]>,
        dy: &[f32],
        dx: &mut [f32],
        grads: &mut Grads,
    ) -> Result<(), TrainError> {
        let w = self.base.layers[l].mat(p);
        matmul_acc(w, dy, dx)?;
        if let Some(g) = grads.base.as_mut() {
            outer_acc(dy, x, w.rows, w.cols, g.layers[l].mat_mut(p));
        }
        let Some((i, m)) = self.module(l, p) else {
            return Ok(());
        };
        let u = u.expect("the forward keeps the LoRA input of every adapted projection");
        let (r, n) = (m.rank, dy.len() / m.out_dim);
        let scale = self.lora.map_or(0.0, LoraAdapter::scale);
        let g = &mut grads.lora[i];
        // y += s·u·Bᵀ:  dB += (s·dy)ᵀ·u,  du = (s·dy)·B.
        let dys: Vec<f32> = dy.iter().map(|v| v * scale).collect();
        outer_acc(&dys, u, m.out_dim, r, &mut g.b);
        let mut du = vec![0f32; n * r];
        matmul_acc(&f32_matrix(&m.b, m.out_dim, r), &dys, &mut du)?;
        // u = xd·Aᵀ:  dA += duᵀ·xd,  dxd = du·A,  dx += dropout-mask ⊙ dxd.
        let xd = self.lora_input(l, p, x);
        outer_acc(&du, &xd, r, m.in_dim, &mut g.a);
        let a = f32_matrix(&m.a, r, m.in_dim);
        match self.dropout_scales(l, p, x.len()) {
            None => matmul_acc(&a, &du, dx)?,
            Some(s) => {
                let mut dxd = vec![0f32; x.len()];
                matmul_acc(&a, &du, &mut dxd)?;
                for ((o, v), s) in dx.iter_mut().zip(dxd).zip(s) {
                    *o += v * s;
                }
            }
        }
        Ok(())
    }

    /// The backward of block `l` (input `x`, kept values `a`): `dx` holds the gradient at
    /// the block's output and leaves holding the gradient at its input.
    pub(crate) fn layer_backward(
        &self,
        l: usize,
        x: &[f32],
        a: &LayerActs,
        dx: &mut [f32],
        grads: &mut Grads,
    ) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let lw = &self.base.layers[l];
        let u = |p: Proj| a.lora_u[p.index()].as_deref();
        let n = self.packed.tokens.len();

        // out = x_mid + down(silu(gate)·up), gate/up = proj(rms_norm(x_mid)).
        let mut dact = vec![0f32; n * cfg.ffn_dim];
        self.project_back(l, Proj::Down, &a.act, u(Proj::Down), dx, &mut dact, grads)?;
        let (dgate, dup) = swiglu_back(&a.gate, &a.up, &dact);
        drop(dact);
        let mut dxn = vec![0f32; n * cfg.dim];
        self.project_back(
            l,
            Proj::Gate,
            &a.xn2,
            u(Proj::Gate),
            &dgate,
            &mut dxn,
            grads,
        )?;
        self.project_back(l, Proj::Up, &a.xn2, u(Proj::Up), &dup, &mut dxn, grads)?;
        let dw = grads.base.as_mut().map(|g| &mut g.layers[l].ffn_norm[..]);
        rms_norm_back(&a.x_mid, lw.ffn_norm, &a.rms2, &dxn, dx, dw);

        // x_mid = x + o(attention(rope(q), rope(k), v)), q/k/v = proj(rms_norm(x)).
        let mut dattn = vec![0f32; n * cfg.q_dim()];
        self.project_back(l, Proj::O, &a.attn, u(Proj::O), dx, &mut dattn, grads)?;
        let (mut dq, mut dk, dv) =
            attention::backward(cfg, &self.packed.seqs, &a.q, &a.k, &a.v, &dattn);
        drop(dattn);
        self.rope_back(&mut dq, cfg.q_dim());
        self.rope_back(&mut dk, cfg.kv_dim());
        dxn.fill(0.0);
        self.project_back(l, Proj::Q, &a.xn1, u(Proj::Q), &dq, &mut dxn, grads)?;
        self.project_back(l, Proj::K, &a.xn1, u(Proj::K), &dk, &mut dxn, grads)?;
        self.project_back(l, Proj::V, &a.xn1, u(Proj::V), &dv, &mut dxn, grads)?;
        let dw = grads.base.as_mut().map(|g| &mut g.layers[l].attn_norm[..]);
        rms_norm_back(x, lw.attn_norm, &a.rms1, &dxn, dx, dw);
        Ok(())
    }
}
