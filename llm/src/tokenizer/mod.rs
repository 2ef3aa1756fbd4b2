//! Tokenizers from GGUF metadata or `tokenizer.json`, tokenizing as llama.cpp does.
//!
//! Both sources run on the `tokenizers` engine. A GGUF vocabulary ([`VocabSpec`]) is turned
//! into an engine programmatically (BPE model, the pre-tokenizer its `tokenizer.ggml.pre`
//! names, byte-level decoder, special tokens); special-token text is cut out of the input
//! first exactly as llama.cpp's `llama_tokenize` does, so ids match llama.cpp's. A
//! `tokenizer.json` is run by the engine as written.
//!
//! Supported GGUF vocabularies (`tokenizer.ggml.model`): `gpt2` (byte-level BPE) with the
//! pre-tokenizer families of llama.cpp named `default`, `gpt-2` (and aliases such as `mpt`,
//! `olmo`), `starcoder` (`smollm`, `refact`, `command-r`, …: every digit apart), `llama3`
//! (`llama-bpe`, …), `dbrx`/`smaug-bpe`, `qwen2` (`stablelm2`, …) and `falcon` — see
//! [`supported_pre_tokenizers`]; and `llama` (SentencePiece: space prefix, `▁`, merges by
//! score, `<0xNN>` byte fallback). Others are refused with a typed error.
//!
//! Decoding renders every token, special ones included, as the bytes it stands for, so
//! `decode(encode(text))` gives back `text` (llama.cpp's optional clean-up of spaces before
//! punctuation is not applied). SentencePiece decoding drops the space put before the text.

mod bytes;
/// The byte-level BPE alphabet (also used to build synthetic vocabularies elsewhere).
pub(crate) use bytes::char_of_byte;
mod error;
mod from_json;
mod from_spec;
mod pretokenize;
mod spec;
mod special;
#[cfg(test)]
mod tests;
mod train;

use std::path::Path;

pub use error::TokenizerError;
pub use pretokenize::supported_pre_tokenizers;
pub use spec::{SUPPORTED_MODELS, VocabSpec, keys, token_type};
pub use train::{END_OF_TEXT, train_bpe};

use from_spec::Algo;
use special::{Fragment, SpecialSplitter};

/// A tokenizer: text to token ids and back.
pub struct Tokenizer {
    engine: Engine,
    /// The bytes each token stands for.
    pieces: Vec<Vec<u8>>,
    /// Control tokens.
    control: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
}

enum Engine {
    /// Built from GGUF vocabulary data; special tokens are cut out before the engine runs.
    Gguf {
        tk: Box<tokenizers::Tokenizer>,
        splitter: SpecialSplitter,
        algo: Algo,
    },
    /// Loaded from `tokenizer.json`.
    Json {
        parse: Box<tokenizers::Tokenizer>,
        plain: Box<tokenizers::Tokenizer>,
    },
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.engine {
            Engine::Gguf {
                algo: Algo::Bpe, ..
            } => "gguf/bpe",
            Engine::Gguf {
                algo: Algo::Spm { .. },
                ..
            } => "gguf/spm",
            Engine::Json { .. } => "tokenizer.json",
        };
        f.debug_struct("Tokenizer")
            .field("source", &source)
            .field("n_vocab", &self.pieces.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds a tokenizer from GGUF-style vocabulary data.
    pub fn from_spec(spec: &VocabSpec) -> Result<Self, TokenizerError> {
        let built = from_spec::build(spec)?;
        Ok(Self {
            engine: Engine::Gguf {
                tk: Box::new(built.engine),
                splitter: built.splitter,
                algo: built.algo,
            },
            pieces: built.pieces,
            control: built.control,
            bos: built.bos,
            eos: built.eos,
            add_bos: spec.add_bos,
            add_eos: spec.add_eos,
            chat_template: spec.chat_template.clone(),
        })
    }

    /// Builds the tokenizer a GGUF model file describes (`tokenizer.ggml.*` metadata).
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Self, TokenizerError> {
        Self::from_spec(&VocabSpec::from_gguf(file)?)
    }

    /// Loads a Hugging Face `tokenizer.json`; `add_special` runs its post-processor. BOS and
    /// EOS (and the chat template) come from a `tokenizer_config.json` beside it if there is
    /// one, else from the tokens the post-processor adds around a text, else EOS is the first
    /// end-of-text-looking special token (`<|im_end|>`, `<|endoftext|>`, `</s>`, …).
    pub fn from_json_file(path: &Path) -> Result<Self, TokenizerError> {
        let loaded = from_json::load(path)?;
        let (add_bos, add_eos) = (false, false);
        Ok(Self {
            engine: Engine::Json {
                parse: Box::new(loaded.parse),
                plain: Box::new(loaded.plain),
            },
            pieces: loaded.pieces,
            control: loaded.control,
            bos: loaded.bos,
            eos: loaded.eos,
            add_bos,
            add_eos,
            chat_template: loaded.chat_template,
        })
    }

    /// Token ids for `text`, like llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` adds BOS (and EOS) as the vocabulary asks; `parse_special` turns
    /// special-token text such as `<|im_start|>` into its id, else it is tokenized as text.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        match &self.engine {
            Engine::Json { parse, plain } => {
                let tk = if parse_special { parse } else { plain };
                let enc = tk
                    .encode(text, add_special)
                    .map_err(|e| TokenizerError::engine("encoding", e))?;
                Ok(enc.get_ids().to_vec())
            }
            Engine::Gguf { tk, splitter, .. } => {
                let mut out = Vec::with_capacity(text.len() / 3 + 2);
                if add_special && self.add_bos {
                    out.extend(self.bos);
                }
                for frag in splitter.split(text, parse_special) {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        // Every text fragment starts the input or follows a special token, so
                        // a SentencePiece engine's normalizer (space prefix, `▁` for spaces)
                        // applies to each, as llama.cpp's does.
                        Fragment::Text(t) => out.extend(engine_ids(tk, t)?),
                    }
                }
                if add_special && self.add_eos {
                    out.extend(self.eos);
                }
                Ok(out)
            }
        }
    }

    /// The text `ids` stand for: every token's bytes (special tokens as their text), invalid
    /// UTF-8 (a character cut between calls) replaced by U+FFFD. SentencePiece vocabularies
    /// drop the space put before the text.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.piece(id)?;
            let strip = i == 0
                && matches!(
                    &self.engine,
                    Engine::Gguf {
                        algo: Algo::Spm {
                            add_space_prefix: true
                        },
                        ..
                    }
                )
                && piece.first() == Some(&b' ');
            out.extend_from_slice(if strip { &piece[1..] } else { piece });
        }
        Ok(match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// The raw bytes of one token (possibly part of a UTF-8 character), for streaming output.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        self.piece(id).map(<[u8]>::to_vec)
    }

    fn piece(&self, id: u32) -> Result<&[u8], TokenizerError> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.pieces.get(i))
            .map(Vec::as_slice)
            .ok_or(TokenizerError::IdOutOfRange {
                id,
                n_vocab: self.pieces.len(),
            })
    }

    /// The engine as a Hugging Face `tokenizer.json` (for GGUF vocabularies: the model,
    /// pre-tokenizer or normalizer, decoder, special tokens and BOS/EOS template built from
    /// the GGUF data), loadable with [`Tokenizer::from_json_file`] or by other tools.
    pub fn to_tokenizer_json(&self, pretty: bool) -> Result<String, TokenizerError> {
        let tk = match &self.engine {
            Engine::Gguf { tk, .. } => tk,
            Engine::Json { parse, .. } => parse,
        };
        tk.to_string(pretty)
            .map_err(|e| TokenizerError::engine("serializing", e))
    }

    /// The number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `id` is a control token (GGUF token type 3, or a special added token).
    pub fn is_special(&self, id: u32) -> bool {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.control.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// The chat template (Jinja) the model came with, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

fn engine_ids(tk: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    let enc = tk
        .encode(text, false)
        .map_err(|e| TokenizerError::engine("encoding", e))?;
    Ok(enc.get_ids().to_vec())
}
