//! The base model as training sees it: a read-only view of every weight ([`BaseView`]), over
//! either the model file (weights stay in their stored, possibly quantized, format) or an
//! owned f32 copy ([`Params`], the full-parameter mode, whose layout also holds base
//! gradients).

use super::TrainError;
use crate::kernels::QMatrix;
use crate::llama::{LlamaConfig, LlamaModel, Proj};
use crate::quant::GgmlType;

/// One block's weights.
#[derive(Debug, Clone)]
pub struct LayerView<'a> {
    pub attn_norm: &'a [f32],
    pub ffn_norm: &'a [f32],
    /// The seven projections in [`Proj::ALL`] order.
    pub mats: [QMatrix<'a>; 7],
}

impl<'a> LayerView<'a> {
    pub fn mat(&self, p: Proj) -> &QMatrix<'a> {
        &self.mats[p.index()]
    }
}

/// Every weight of a llama model, borrowed.
#[derive(Debug, Clone)]
pub struct BaseView<'a> {
    pub cfg: &'a LlamaConfig,
    pub embed: QMatrix<'a>,
    pub layers: Vec<LayerView<'a>>,
    pub output_norm: &'a [f32],
    /// The output head (the embedding matrix when tied).
    pub output: QMatrix<'a>,
    pub tied: bool,
}

impl<'a> BaseView<'a> {
    /// The weights of a loaded model, in the memory map as stored.
    pub fn of_model(model: &'a LlamaModel) -> Self {
        let file = model.file();
        let w = &model.weights;
        Self {
            cfg: &model.cfg,
            embed: w.embed.matrix(file),
            layers: w
                .layers
                .iter()
                .map(|l| LayerView {
                    attn_norm: &l.attn_norm,
                    ffn_norm: &l.ffn_norm,
                    mats: Proj::ALL.map(|p| l.proj(p).matrix(file)),
                })
                .collect(),
            output_norm: &w.output_norm,
            output: w.output.matrix(file),
            tied: w.output.info.name == w.embed.info.name,
        }
    }
}

/// An owned f32 tensor set with the model's layout: the weights of a full-parameter model, or
/// the gradients of every base weight. Matrices are row-major `[rows × cols]` (out × in).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `[n_vocab × dim]`.
    pub embed: Vec<f32>,
    pub layers: Vec<LayerParams>,
    pub output_norm: Vec<f32>,
    /// `[n_vocab × dim]`, or `None` when the output head is the embedding (tied).
    pub output: Option<Vec<f32>>,
}

/// One block of [`Params`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerParams {
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// The seven projections in [`Proj::ALL`] order.
    pub mats: [Vec<f32>; 7],
}

impl LayerParams {
    pub fn mat(&self, p: Proj) -> &[f32] {
        &self.mats[p.index()]
    }

    pub fn mat_mut(&mut self, p: Proj) -> &mut Vec<f32> {
        &mut self.mats[p.index()]
    }
}

impl Params {
    /// All zeros, shaped for `cfg` (`tied`: no separate output head).
    pub fn zeros(cfg: &LlamaConfig, tied: bool) -> Self {
        let d = cfg.dim;
        Self {
            embed: vec![0.0; cfg.n_vocab * d],
            layers: (0..cfg.n_layers)
                .map(|_| LayerParams {
                    attn_norm: vec![0.0; d],
                    ffn_norm: vec![0.0; d],
                    mats: Proj::ALL.map(|p| {
                        let (o, i) = cfg.proj_shape(p);
                        vec![0.0; o * i]
                    }),
                })
                .collect(),
            output_norm: vec![0.0; d],
            output: (!tied).then(|| vec![0.0; cfg.n_vocab * d]),
        }
    }

    /// An f32 copy of every weight of `base` (for small models: this is the whole model in
    /// f32).
    pub fn from_view(base: &BaseView) -> Result<Self, TrainError> {
        let dense = |m: &QMatrix| -> Result<Vec<f32>, TrainError> {
            let mut out = vec![0f32; m.rows * m.cols];
            for (r, row) in out.chunks_exact_mut(m.cols).enumerate() {
                m.dequantize_row(r, row)?;
            }
            Ok(out)
        };
        let mut layers = Vec::with_capacity(base.layers.len());
        for l in &base.layers {
            let mut mats: [Vec<f32>; 7] = Default::default();
            for (dst, m) in mats.iter_mut().zip(&l.mats) {
                *dst = dense(m)?;
            }
            layers.push(LayerParams {
                attn_norm: l.attn_norm.to_vec(),
                ffn_norm: l.ffn_norm.to_vec(),
                mats,
            });
        }
        Ok(Self {
            embed: dense(&base.embed)?,
            layers,
            output_norm: base.output_norm.to_vec(),
            output: if base.tied {
                None
            } else {
                Some(dense(&base.output)?)
            },
        })
    }

    /// [`Self::from_view`] of a loaded model.
    pub fn from_model(model: &LlamaModel) -> Result<Self, TrainError> {
        Self::from_view(&BaseView::of_model(model))
    }

    /// These weights as a [`BaseView`] (f32 matrices) of a model of `cfg`.
    pub fn view<'a>(&'a self, cfg: &'a LlamaConfig) -> BaseView<'a> {
        let mat = |data: &'a [f32], rows: usize, cols: usize| {
            QMatrix::new(GgmlType::F32, rows, cols, bytemuck::cast_slice(data))
                .expect("Params are shaped for cfg")
        };
        let embed = mat(&self.embed, cfg.n_vocab, cfg.dim);
        BaseView {
            cfg,
            embed,
            layers: self
                .layers
                .iter()
                .map(|l| LayerView {
                    attn_norm: &l.attn_norm,
                    ffn_norm: &l.ffn_norm,
                    mats: Proj::ALL.map(|p| {
                        let (o, i) = cfg.proj_shape(p);
                        mat(l.mat(p), o, i)
                    }),
                })
                .collect(),
            output_norm: &self.output_norm,
            output: self
                .output
                .as_deref()
                .map_or(embed, |o| mat(o, cfg.n_vocab, cfg.dim)),
            tied: self.output.is_none(),
        }
    }

    /// Every tensor with its GGUF name, in a fixed order.
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![("token_embd.weight".into(), &self.embed)];
        for (i, l) in self.layers.iter().enumerate() {
            out.push((format!("blk.{i}.attn_norm.weight"), &l.attn_norm));
            out.push((format!("blk.{i}.ffn_norm.weight"), &l.ffn_norm));
            for p in Proj::ALL {
                out.push((format!("blk.{i}.{}.weight", p.gguf_name()), l.mat(p)));
            }
        }
        out.push(("output_norm.weight".into(), &self.output_norm));
        if let Some(o) = &self.output {
            out.push(("output.weight".into(), o));
        }
        out
    }

    /// [`Self::tensors`]' values, mutable, in the same order.
    pub fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        let mut out: Vec<&mut [f32]> = vec![&mut self.embed];
        for l in &mut self.layers {
            out.push(&mut l.attn_norm);
            out.push(&mut l.ffn_norm);
            out.extend(l.mats.iter_mut().map(|m| &mut m[..]));
        }
        out.push(&mut self.output_norm);
        if let Some(o) = &mut self.output {
            out.push(o);
        }
        out
    }
}
