//! The model's tensors, located and shape-checked in the GGUF file. Matrices stay in the
//! memory map in their stored format; only the small norm vectors are copied out as f32.

use std::sync::Arc;

use super::{LlamaConfig, LlamaError};
use crate::gguf::{GgufFile, TensorInfo};
use crate::kernels::{Level, Q4_0x16, QMatrix, cpu, q4_0x16};
use crate::quant::{self, GgmlType};

/// A weight matrix in the file: `rows` outputs × `cols` inputs.
#[derive(Debug, Clone)]
pub struct Linear {
    pub info: TensorInfo,
    pub rows: usize,
    pub cols: usize,
    /// The rows interleaved for this CPU's kernels ([`Linear::interleave`]).
    pub packed: Option<Arc<Q4_0x16>>,
}

impl Linear {
    pub fn matrix<'a>(&'a self, file: &'a GgufFile) -> QMatrix<'a> {
        let m = QMatrix::new(
            self.info.ty,
            self.rows,
            self.cols,
            file.tensor_data(&self.info),
        )
        .expect("shape checked at load");
        match &self.packed {
            Some(p) => m.with_packed(p).unwrap_or(m),
            None => m,
        }
    }
}

/// The seven projections of a block, by the names PEFT and llama.cpp give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// The position of `self` in [`Proj::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// llama.cpp's tensor name suffix (`blk.{i}.{gguf_name}.weight`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }

    /// Hugging Face's module name (`q_proj`, …, `down_proj`), as PEFT's `target_modules`.
    pub fn peft_name(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }

    /// The Hugging Face sub-module holding it (`self_attn` or `mlp`).
    pub fn peft_parent(self) -> &'static str {
        match self {
            Proj::Q | Proj::K | Proj::V | Proj::O => "self_attn",
            Proj::Gate | Proj::Up | Proj::Down => "mlp",
        }
    }

    /// The short name used on the command line (`q`, `k`, `v`, `o`, `gate`, `up`, `down`).
    pub fn short_name(self) -> &'static str {
        match self {
            Proj::Q => "q",
            Proj::K => "k",
            Proj::V => "v",
            Proj::O => "o",
            Proj::Gate => "gate",
            Proj::Up => "up",
            Proj::Down => "down",
        }
    }

    /// Any of its names: short (`q`), Hugging Face (`q_proj`) or llama.cpp (`attn_q`).
    pub fn parse(name: &str) -> Option<Proj> {
        Proj::ALL
            .into_iter()
            .find(|p| [p.short_name(), p.peft_name(), p.gguf_name()].contains(&name.trim()))
    }
}

/// The norms a Gemma 3 block has besides the llama ones.
#[derive(Debug, Clone)]
pub struct GemmaNorms {
    /// RMSNorm weights of every query head and every key head (`head_dim` each).
    pub q_norm: Vec<f32>,
    pub k_norm: Vec<f32>,
    /// On the attention output and the FFN output, before each joins the residual stream.
    pub post_attn_norm: Vec<f32>,
    pub post_ffn_norm: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// Gemma 3's extra norms (`None` for a llama block).
    pub gemma: Option<GemmaNorms>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Layer {
    pub fn proj(&self, p: Proj) -> &Linear {
        match p {
            Proj::Q => &self.q,
            Proj::K => &self.k,
            Proj::V => &self.v,
            Proj::O => &self.o,
            Proj::Gate => &self.gate,
            Proj::Up => &self.up,
            Proj::Down => &self.down,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Weights {
    pub embed: Linear,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    /// The output head; the embedding matrix when tied.
    pub output: Linear,
}

impl Weights {
    /// Makes the interleaved copies the AVX-512 VNNI kernels read ([`Q4_0x16`]: Q4_0 matrices
    /// with a multiple of 16 rows, on CPUs that have the kernels), all in one mapping, and
    /// releases the file's pages of each matrix once copied: the products of inference use the
    /// copies; embedding lookups keep reading the file. The bytes now held in copies.
    pub fn interleave(&mut self, file: &GgufFile) -> usize {
        if cpu::level() < Level::Avx2 {
            return 0;
        }
        let mut lins: Vec<&mut Linear> = std::iter::once(&mut self.output)
            .chain(self.layers.iter_mut().flat_map(|l| {
                [
                    &mut l.q,
                    &mut l.k,
                    &mut l.v,
                    &mut l.o,
                    &mut l.gate,
                    &mut l.up,
                    &mut l.down,
                ]
            }))
            .filter(|lin| lin.packed.is_none() && q4_0x16::can_pack(&lin.matrix(file)))
            .collect();
        let mats: Vec<QMatrix> = lins.iter().map(|lin| lin.matrix(file)).collect();
        let infos: Vec<&TensorInfo> = lins.iter().map(|lin| &lin.info).collect();
        let Some(packed) = Q4_0x16::pack_all(&mats, |i| file.release_pages(infos[i])) else {
            return 0;
        };
        let bytes = packed.iter().map(Q4_0x16::bytes).sum();
        for (lin, p) in lins.iter_mut().zip(packed) {
            lin.packed = Some(Arc::new(p));
        }
        bytes
    }

    pub fn load(file: &GgufFile, cfg: &LlamaConfig) -> Result<Self, LlamaError> {
        let embed = linear(file, "token_embd.weight", cfg.n_vocab, cfg.dim)?;
        let output = match file.tensor("output.weight") {
            Some(_) => linear(file, "output.weight", cfg.n_vocab, cfg.dim)?,
            None => embed.clone(),
        };
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let name = |s: &str| format!("blk.{i}.{s}.weight");
                let lin = |p: Proj, rows, cols| linear(file, &name(p.gguf_name()), rows, cols);
                let gemma = cfg
                    .gemma3
                    .as_ref()
                    .map(|_| -> Result<_, LlamaError> {
                        Ok(GemmaNorms {
                            q_norm: vector(file, &name("attn_q_norm"), cfg.head_dim)?,
                            k_norm: vector(file, &name("attn_k_norm"), cfg.head_dim)?,
                            post_attn_norm: vector(file, &name("post_attention_norm"), cfg.dim)?,
                            post_ffn_norm: vector(file, &name("post_ffw_norm"), cfg.dim)?,
                        })
                    })
                    .transpose()?;
                Ok(Layer {
                    attn_norm: vector(file, &name("attn_norm"), cfg.dim)?,
                    ffn_norm: vector(file, &name("ffn_norm"), cfg.dim)?,
                    gemma,
                    q: lin(Proj::Q, cfg.q_dim(), cfg.dim)?,
                    k: lin(Proj::K, cfg.kv_dim(), cfg.dim)?,
                    v: lin(Proj::V, cfg.kv_dim(), cfg.dim)?,
                    o: lin(Proj::O, cfg.dim, cfg.q_dim())?,
                    gate: lin(Proj::Gate, cfg.ffn_dim, cfg.dim)?,
                    up: lin(Proj::Up, cfg.ffn_dim, cfg.dim)?,
                    down: lin(Proj::Down, cfg.dim, cfg.ffn_dim)?,
                })
            })
            .collect::<Result<_, LlamaError>>()?;
        Ok(Self {
            embed,
            layers,
            output_norm: vector(file, "output_norm.weight", cfg.dim)?,
            output,
        })
    }
}

fn tensor<'a>(file: &'a GgufFile, name: &str, dims: &[u64]) -> Result<&'a TensorInfo, LlamaError> {
    let info = file
        .tensor(name)
        .ok_or_else(|| LlamaError::MissingTensor(name.to_string()))?;
    if info.dims != dims {
        return Err(LlamaError::TensorShape {
            name: name.to_string(),
            expected: dims.to_vec(),
            found: info.dims.clone(),
        });
    }
    if info.ty == GgmlType::Q8_1 || info.ty == GgmlType::Q8K {
        return Err(LlamaError::TensorType {
            name: name.to_string(),
            ty: info.ty,
        });
    }
    Ok(info)
}

fn linear(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Linear, LlamaError> {
    let info = tensor(file, name, &[cols as u64, rows as u64])?;
    Ok(Linear {
        info: info.clone(),
        rows,
        cols,
        packed: None,
    })
}

fn vector(file: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>, LlamaError> {
    let info = tensor(file, name, &[n as u64])?;
    let mut out = vec![0.0; n];
    quant::dequantize_row(info.ty, file.tensor_data(info), &mut out)?;
    Ok(out)
}
