//! Random llama models, for tests and benchmarks: any shape, any stored type, seeded.
//!
//! Weights come from a splitmix64 stream in a fixed order, each value
//! `(k / 2²⁴ · 2 − 1) · scale` with 24 random bits, exact in f32 and f64, so
//! `scripts/reference/golden_logits.py` makes the very same model in Python and llama.cpp's
//! logits for it can be committed without committing the model. Matrices use
//! scale 1/√fan-in, norms are 1 + 0.1·u. Formats without a quantizer here (the K-quants) get
//! random bytes from the same stream with their f16 scales set to fit 1/√fan-in
//! ([`random_blocks`]). The file carries a byte-level BPE vocabulary so llama.cpp loads it
//! too; [`RandomShape::gemma3`] makes Gemma 3's tensors and metadata instead of llama's.

use super::gemma3::{self, Gemma3};
use super::{LlamaConfig, LlamaError, RopeOrder};
use crate::gguf::GgufWriter;
use crate::quant::{self, GgmlType};
use crate::tokenizer::{VocabSpec, token_type};

/// The hyper-parameters of a random model.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomShape {
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub layers: usize,
    pub vocab: usize,
    /// Output head shares the embedding matrix.
    pub tied: bool,
    /// A Gemma 3 model instead of a llama one (its output head is always tied).
    pub gemma3: Option<RandomGemma3>,
}

/// What a random Gemma 3 model sets beyond the llama shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomGemma3 {
    /// Values per attention head (Gemma's need not be dim / heads).
    pub head_dim: usize,
    /// Positions a local layer sees; every sixth layer is global.
    pub sliding_window: usize,
}

impl RandomShape {
    /// SmolLM2-135M's shape (30 layers, dim 576, 9/3 heads, FFN 1536, vocab 49152, tied).
    pub fn smollm2_135m() -> Self {
        Self {
            dim: 576,
            heads: 9,
            kv_heads: 3,
            ffn: 1536,
            layers: 30,
            vocab: 49152,
            tied: true,
            gemma3: None,
        }
    }
}

/// splitmix64 (Steele, Lea & Flood 2014): tiny, and trivially the same in Python.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` values uniform in [-scale, scale).
    pub fn uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (((self.next_u64() >> 40) as f64 / 16_777_216.0 * 2.0 - 1.0) as f32) * scale)
            .collect()
    }
}

/// A random model as a GGUF writer (matrices stored as `ty`, norms as f32) and the next
/// `n_tokens` token ids of the same stream (the golden fixtures' inputs).
pub fn random_model(
    shape: &RandomShape,
    ty: GgmlType,
    seed: u64,
    n_tokens: usize,
) -> Result<(GgufWriter, Vec<u32>), LlamaError> {
    let s = shape;
    let mut rng = SplitMix64::new(seed);
    let mut w = GgufWriter::new();
    metadata(&mut w, s);
    for (name, rows, cols) in s.tensors() {
        if rows == 0 {
            let vals: Vec<f32> = rng
                .uniform(cols, 0.1)
                .into_iter()
                .map(|u| 1.0 + u)
                .collect();
            w.add_tensor(
                name,
                &[cols as u64],
                GgmlType::F32,
                quant::quantize(GgmlType::F32, &vals)?,
            )?;
        } else {
            let scale = (1.0 / (cols as f64).sqrt()) as f32;
            let bytes = if ty.can_quantize() {
                quant::quantize(ty, &rng.uniform(rows * cols, scale))?
            } else {
                random_blocks(&mut rng, ty, rows * cols, scale)
            };
            w.add_tensor(name, &[cols as u64, rows as u64], ty, bytes)?;
        }
    }
    let tokens = (0..n_tokens)
        .map(|_| (rng.next_u64() % s.vocab as u64) as u32)
        .collect();
    Ok((w, tokens))
}

/// `n` values of K-quant type `ty` as random bytes from `rng` (eight a draw, little-endian),
/// then each block's f16 scales set to `scale / div · (0.75 + 0.25·u)`, one draw each in
/// block order, so that values stay near ±`scale` (`div` is the largest code-times-sub-scale
/// product of the format). Python draws the very same bytes.
fn random_blocks(rng: &mut SplitMix64, ty: GgmlType, n: usize, scale: f32) -> Vec<u8> {
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    let mut bytes: Vec<u8> = Vec::with_capacity(n / bl * bb + 8);
    while bytes.len() < n / bl * bb {
        bytes.extend(rng.next_u64().to_le_bytes());
    }
    bytes.truncate(n / bl * bb);
    // (offsets of the f16 scale fields, divisor)
    let (fields, div): (&[usize], f32) = match ty {
        GgmlType::Q4K | GgmlType::Q5K => (&[0, 2], 1000.0),
        GgmlType::Q6K => (&[bb - 2], 4000.0),
        GgmlType::Q2K | GgmlType::Q3K => (&[bb - 4, bb - 2], 1000.0),
        _ => (&[], 1.0),
    };
    for block in bytes.chunks_exact_mut(bb) {
        for &o in fields {
            let u = rng.uniform(1, 1.0)[0];
            let v = scale / div * (0.75 + 0.25 * u);
            block[o..o + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    bytes
}

impl RandomShape {
    /// Values per attention head.
    fn head_dim(&self) -> usize {
        self.gemma3.map_or(self.dim / self.heads, |g| g.head_dim)
    }

    /// (name, rows, cols) in generation order; rows == 0 marks a norm vector of `cols` values.
    fn tensors(&self) -> Vec<(String, usize, usize)> {
        let (s, hd) = (self, self.head_dim());
        let mut t: Vec<(String, usize, usize)> = vec![("token_embd.weight".into(), s.vocab, s.dim)];
        for i in 0..s.layers {
            let n = |t: &str| format!("blk.{i}.{t}.weight");
            t.extend([
                (n("attn_norm"), 0, s.dim),
                (n("attn_q"), s.heads * hd, s.dim),
                (n("attn_k"), s.kv_heads * hd, s.dim),
                (n("attn_v"), s.kv_heads * hd, s.dim),
            ]);
            if s.gemma3.is_some() {
                t.extend([(n("attn_q_norm"), 0, hd), (n("attn_k_norm"), 0, hd)]);
            }
            t.push((n("attn_output"), s.dim, s.heads * hd));
            if s.gemma3.is_some() {
                t.push((n("post_attention_norm"), 0, s.dim));
            }
            t.extend([
                (n("ffn_norm"), 0, s.dim),
                (n("ffn_gate"), s.ffn, s.dim),
                (n("ffn_up"), s.ffn, s.dim),
                (n("ffn_down"), s.dim, s.ffn),
            ]);
            if s.gemma3.is_some() {
                t.push((n("post_ffw_norm"), 0, s.dim));
            }
        }
        t.push(("output_norm.weight".into(), 0, s.dim));
        if !s.tied && s.gemma3.is_none() {
            t.push(("output.weight".into(), s.vocab, s.dim));
        }
        t
    }

    /// The model's config: llama (RoPE base 10000, context 2048), or Gemma 3 (NeoX RoPE, base
    /// 10⁶ for global layers and 10⁴ for local ones, ε 10⁻⁶, queries scaled by 1/√head_dim).
    pub fn config(&self) -> LlamaConfig {
        let hd = self.head_dim();
        if let Some(g) = self.gemma3 {
            return LlamaConfig {
                arch: gemma3::ARCH.into(),
                rope_base: 1_000_000.0,
                rope_order: RopeOrder::NeoX,
                rms_eps: 1e-6,
                gemma3: Some(Gemma3 {
                    sliding_window: Some(g.sliding_window),
                    pattern: 6,
                    rope_base_local: 10_000.0,
                    query_scale: 1.0 / (hd as f32).sqrt(),
                    final_logit_softcap: None,
                }),
                ..self.llama_config(hd)
            };
        }
        self.llama_config(hd)
    }

    fn llama_config(&self, hd: usize) -> LlamaConfig {
        LlamaConfig {
            arch: "llama".into(),
            n_layers: self.layers,
            dim: self.dim,
            ffn_dim: self.ffn,
            n_heads: self.heads,
            n_kv_heads: self.kv_heads,
            head_dim: hd,
            rope_dim: hd,
            rope_base: 10_000.0,
            rope_freq_scale: 1.0,
            rope_order: RopeOrder::Normal,
            rms_eps: 1e-5,
            context_len: 2048,
            n_vocab: self.vocab,
            gemma3: None,
        }
    }
}

fn metadata(w: &mut GgufWriter, s: &RandomShape) {
    s.config().write_metadata(w);
    let (tokens, merges) = byte_level_vocab(s.vocab);
    let n = tokens.len();
    VocabSpec {
        model: "gpt2".into(),
        pre: Some("default".into()),
        token_types: (0..n)
            .map(|i| {
                if i + 2 >= n {
                    token_type::CONTROL
                } else {
                    token_type::NORMAL
                }
            })
            .collect(),
        tokens,
        merges,
        bos: Some(n as u32 - 2),
        eos: Some(n as u32 - 1),
        add_bos: false,
        ..VocabSpec::default()
    }
    .write_metadata(w);
}

/// GPT-2's 256 byte characters, then merged pairs, then `<s>` and `</s>`: `vocab` tokens.
fn byte_level_vocab(vocab: usize) -> (Vec<String>, Vec<String>) {
    let alpha: Vec<char> = (0..=255u8).map(crate::tokenizer::char_of_byte).collect();
    let mut tokens: Vec<String> = alpha.iter().map(|c| c.to_string()).collect();
    let mut merges = Vec::new();
    let mut i = 0usize;
    while tokens.len() + 2 < vocab {
        let (a, b) = (alpha[i % 256], alpha[(i / 256) % 256]);
        tokens.push(format!("{a}{b}"));
        merges.push(format!("{a} {b}"));
        i += 1;
    }
    tokens.push("<s>".into());
    tokens.push("</s>".into());
    (tokens, merges)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::gguf::GgufFile;
    use crate::llama::{LlamaModel, Logits};

    fn gemma() -> RandomShape {
        RandomShape {
            dim: 256,
            heads: 4,
            kv_heads: 1,
            ffn: 512,
            layers: 6,
            vocab: 300,
            tied: true,
            gemma3: Some(RandomGemma3 {
                head_dim: 128,
                sliding_window: 16,
            }),
        }
    }

    /// A random Gemma 3 file reads back as the config it was made from, in every format the
    /// goldens use (K-quants from random blocks), and runs to finite logits.
    #[test]
    fn random_gemma3_reads_back_as_its_config() {
        let shape = gemma();
        for ty in [GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4K, GgmlType::Q6K] {
            let (w, tokens) = random_model(&shape, ty, 7, 20).unwrap();
            let file = Arc::new(GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap());
            let model = LlamaModel::from_file(file.clone()).unwrap();
            assert_eq!(model.cfg, shape.config(), "{ty:?}");
            assert_eq!(model.cfg.window_of(0), Some(16));
            assert_eq!(model.cfg.window_of(5), None);
            let mut cache = model.new_cache(None);
            let logits = model.forward(&mut cache, &tokens, Logits::All).unwrap();
            assert!(logits.iter().all(|v| v.is_finite()), "{ty:?}");
            // Values near ±1/√fan-in: the scales fit the codes.
            let t = model.weights.layers[0].q.matrix(&file);
            let mut row = vec![0f32; t.cols];
            t.dequantize_row(0, &mut row).unwrap();
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.005 && max < 0.5, "{ty:?}: max |w| {max}");
        }
    }
}
