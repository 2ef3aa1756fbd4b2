//! The vocabulary data a GGUF file carries, as a plain struct independent of the file format.

use super::{TokenizerError, pretokenize};
use crate::gguf::Metadata;

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp numbers them.
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The tokenizer families (`tokenizer.ggml.model`) this crate implements.
pub const SUPPORTED_MODELS: &[&str] = &["gpt2", "llama"];

/// A vocabulary as GGUF metadata describes it (`tokenizer.ggml.*`).
///
/// `token_types` and `scores` may be empty (every token normal, every score 0); otherwise they
/// have one entry per token. Merges are `"left right"` strings of byte-level token text,
/// highest priority first (BPE only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VocabSpec {
    /// `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    pub model: String,
    /// The pre-tokenizer name (`tokenizer.ggml.pre`), BPE only.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub scores: Vec<f32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// SentencePiece: put a space before the text (and after every special token).
    pub add_space_prefix: bool,
    pub chat_template: Option<String>,
}

/// GGUF metadata keys read by [`VocabSpec::from_gguf`].
pub mod keys {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const BOS: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS: &str = "tokenizer.ggml.eos_token_id";
    pub const UNK: &str = "tokenizer.ggml.unknown_token_id";
    pub const PAD: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// Token texts llama.cpp treats as control tokens whatever their stored type says (end of
/// turn / generation markers and fill-in-the-middle markers it finds by text).
pub(crate) const CONTROL_LOOKING: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "[EOS]",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Token texts llama.cpp always treats as user-defined (rendered, parsed even without
/// special-token parsing): gpt-oss's channel markers.
pub(crate) const FORCED_USER_DEFINED: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl VocabSpec {
    /// A SentencePiece (`llama`) vocabulary as llama.cpp defaults one: `<unk>` = 0, BOS = 1
    /// (added), EOS = 2, a space prefix, no merges.
    pub fn sentencepiece(tokens: Vec<String>, token_types: Vec<i32>, scores: Vec<f32>) -> Self {
        VocabSpec {
            model: "llama".into(),
            pre: None,
            tokens,
            token_types,
            merges: Vec::new(),
            scores,
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            pad: None,
            add_bos: true,
            add_eos: false,
            add_space_prefix: true,
            chat_template: None,
        }
    }

    /// The effective type of token `id`: the stored one, adjusted as llama.cpp adjusts it.
    pub(crate) fn effective_type(&self, id: usize) -> i32 {
        let stored = self
            .token_types
            .get(id)
            .copied()
            .unwrap_or(token_type::NORMAL);
        let text = self.tokens.get(id).map(String::as_str).unwrap_or("");
        if FORCED_USER_DEFINED.contains(&text) {
            token_type::USER_DEFINED
        } else if CONTROL_LOOKING.contains(&text) && stored != token_type::CONTROL {
            // llama.cpp adds the control attribute to such tokens.
            token_type::CONTROL
        } else {
            stored
        }
    }
}

impl VocabSpec {
    /// Reads the vocabulary from a GGUF file's metadata.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Self, TokenizerError> {
        Self::from_metadata(file.metadata())
    }

    /// Reads the vocabulary from GGUF metadata. Flags the file leaves out take llama.cpp's
    /// defaults: BOS is added for SentencePiece and for Llama-3-style BPE, a space prefix is
    /// added for SentencePiece, and SentencePiece BOS/EOS/UNK default to 1/2/0.
    pub fn from_metadata(md: &Metadata) -> Result<Self, TokenizerError> {
        let model = md
            .get_str(keys::MODEL)
            .map_err(|e| meta_err(keys::MODEL, e))?
            .ok_or_else(|| missing(keys::MODEL))?
            .to_owned();
        let pre = md
            .get_str(keys::PRE)
            .map_err(|e| meta_err(keys::PRE, e))?
            .map(str::to_owned);
        let tokens: Vec<String> = md
            .get_str_array(keys::TOKENS)
            .map_err(|e| meta_err(keys::TOKENS, e))?
            .ok_or_else(|| missing(keys::TOKENS))?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let token_types = md
            .get_i32_array(keys::TOKEN_TYPE)
            .map_err(|e| meta_err(keys::TOKEN_TYPE, e))?
            .unwrap_or_default();
        let merges: Vec<String> = match md
            .get_str_array(keys::MERGES)
            .map_err(|e| meta_err(keys::MERGES, e))?
        {
            Some(m) => m.into_iter().map(str::to_owned).collect(),
            None if model == "gpt2" => return Err(missing(keys::MERGES)),
            None => Vec::new(),
        };
        // llama.cpp accepts float or integer scores.
        let scores = match md.get_f32_array(keys::SCORES) {
            Ok(s) => s.unwrap_or_default(),
            Err(float_err) => match md.get_i32_array(keys::SCORES) {
                #[allow(clippy::cast_precision_loss)]
                Ok(s) => s
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
                Err(_) => return Err(meta_err(keys::SCORES, float_err)),
            },
        };
        let id = |key: &str| md.get_u32(key).map_err(|e| meta_err(key, e));
        let flag = |key: &str| md.get_bool(key).map_err(|e| meta_err(key, e));
        let spm = model == "llama";
        let n = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let spm_default = |v: u32| (spm && v < n).then_some(v);
        let add_bos_default = if spm {
            true
        } else {
            pretokenize::lookup(pre.as_deref())
                .map(|p| p.add_bos_default)
                .unwrap_or(false)
        };
        Ok(Self {
            bos: id(keys::BOS)?.or(spm_default(1)),
            eos: id(keys::EOS)?.or(spm_default(2)),
            unk: id(keys::UNK)?.or(spm_default(0)),
            pad: id(keys::PAD)?,
            add_bos: flag(keys::ADD_BOS)?.unwrap_or(add_bos_default),
            add_eos: flag(keys::ADD_EOS)?.unwrap_or(false),
            add_space_prefix: flag(keys::ADD_SPACE_PREFIX)?.unwrap_or(spm),
            chat_template: md
                .get_str(keys::CHAT_TEMPLATE)
                .map_err(|e| meta_err(keys::CHAT_TEMPLATE, e))?
                .map(str::to_owned),
            model,
            pre,
            tokens,
            token_types,
            merges,
            scores,
        })
    }
}

impl VocabSpec {
    /// Writes the vocabulary as GGUF metadata (the keys [`Self::from_metadata`] reads), for
    /// model files this crate makes.
    pub fn write_metadata(&self, w: &mut crate::gguf::GgufWriter) {
        use crate::gguf::Value;
        let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        w.add_kv(keys::MODEL, Value::String(self.model.clone()));
        if let Some(pre) = &self.pre {
            w.add_kv(keys::PRE, Value::String(pre.clone()));
        }
        w.add_kv(keys::TOKENS, strings(&self.tokens));
        if !self.token_types.is_empty() {
            let types = self.token_types.iter().map(|&t| Value::I32(t)).collect();
            w.add_kv(keys::TOKEN_TYPE, Value::Array(types));
        }
        if !self.merges.is_empty() {
            w.add_kv(keys::MERGES, strings(&self.merges));
        }
        if !self.scores.is_empty() {
            let scores = self.scores.iter().map(|&s| Value::F32(s)).collect();
            w.add_kv(keys::SCORES, Value::Array(scores));
        }
        for (key, id) in [
            (keys::BOS, self.bos),
            (keys::EOS, self.eos),
            (keys::UNK, self.unk),
            (keys::PAD, self.pad),
        ] {
            if let Some(id) = id {
                w.add_kv(key, Value::U32(id));
            }
        }
        w.add_kv(keys::ADD_BOS, Value::Bool(self.add_bos));
        w.add_kv(keys::ADD_EOS, Value::Bool(self.add_eos));
        if self.model == "llama" {
            w.add_kv(keys::ADD_SPACE_PREFIX, Value::Bool(self.add_space_prefix));
        }
        if let Some(t) = &self.chat_template {
            w.add_kv(keys::CHAT_TEMPLATE, Value::String(t.clone()));
        }
    }
}

fn meta_err(key: &str, e: crate::gguf::GgufError) -> TokenizerError {
    TokenizerError::Metadata {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

fn missing(key: &str) -> TokenizerError {
    TokenizerError::Metadata {
        key: key.to_owned(),
        reason: "missing".to_owned(),
    }
}
