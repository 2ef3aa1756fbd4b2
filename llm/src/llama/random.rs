//! Random llama models, for tests and benchmarks: any shape, any stored type, seeded.
//!
//! Weights come from a splitmix64 stream in a fixed order, each value
//! `(k / 2²⁴ · 2 − 1) · scale` with 24 random bits, exact in f32 and f64, so
//! `scripts/reference/golden_logits.py` makes the very same model in Python and llama.cpp's
//! logits for it can be committed without committing the model. Matrices use
//! scale 1/√fan-in, norms are 1 + 0.1·u. The file carries a byte-level BPE vocabulary so
//! llama.cpp loads it too.

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
    let hd = s.dim / s.heads;
    // (name, rows, cols); rows == 0 marks a norm vector of `cols` values.
    let mut tensors: Vec<(String, usize, usize)> =
        vec![("token_embd.weight".into(), s.vocab, s.dim)];
    for i in 0..s.layers {
        let n = |t: &str| format!("blk.{i}.{t}.weight");
        tensors.extend([
            (n("attn_norm"), 0, s.dim),
            (n("attn_q"), s.heads * hd, s.dim),
            (n("attn_k"), s.kv_heads * hd, s.dim),
            (n("attn_v"), s.kv_heads * hd, s.dim),
            (n("attn_output"), s.dim, s.heads * hd),
            (n("ffn_norm"), 0, s.dim),
            (n("ffn_gate"), s.ffn, s.dim),
            (n("ffn_up"), s.ffn, s.dim),
            (n("ffn_down"), s.dim, s.ffn),
        ]);
    }
    tensors.push(("output_norm.weight".into(), 0, s.dim));
    if !s.tied {
        tensors.push(("output.weight".into(), s.vocab, s.dim));
    }
    let mut rng = SplitMix64::new(seed);
    let mut w = GgufWriter::new();
    metadata(&mut w, s);
    for (name, rows, cols) in tensors {
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
            let vals = rng.uniform(rows * cols, (1.0 / (cols as f64).sqrt()) as f32);
            w.add_tensor(
                name,
                &[cols as u64, rows as u64],
                ty,
                quant::quantize(ty, &vals)?,
            )?;
        }
    }
    let tokens = (0..n_tokens)
        .map(|_| (rng.next_u64() % s.vocab as u64) as u32)
        .collect();
    Ok((w, tokens))
}

impl RandomShape {
    /// The model's config (llama, RoPE base 10000, context 2048).
    pub fn config(&self) -> LlamaConfig {
        let hd = self.dim / self.heads;
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
