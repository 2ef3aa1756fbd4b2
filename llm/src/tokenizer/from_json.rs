//! Loading a Hugging Face `tokenizer.json`.
//!
//! The file describes the whole pipeline (normalizer, pre-tokenizer, model, post-processor,
//! decoder) and is run as is by the `tokenizers` engine. Two copies are kept: one that
//! recognises special added tokens in the text and one that tokenizes their text as plain
//! text, for `parse_special` on and off. Truncation and padding settings are dropped.
//!
//! A `tokenizer_config.json` beside the file, if there is one, supplies the chat template and
//! the BOS/EOS tokens (`bos_token`, `eos_token`).

use std::path::Path;

use serde_json::Value;
use tokenizers::decoders::DecoderWrapper;

use super::TokenizerError;
use super::bytes::{byte_level_decode, parse_byte_token, spm_piece_bytes};
use super::spec::CONTROL_LOOKING;

pub(crate) struct Loaded {
    /// Recognises special added tokens in the input.
    pub parse: tokenizers::Tokenizer,
    /// Tokenizes special added tokens' text as text.
    pub plain: tokenizers::Tokenizer,
    pub pieces: Vec<Vec<u8>>,
    pub control: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub chat_template: Option<String>,
}

/// How the decoder turns a token's text into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceStyle {
    /// GPT-2 byte-level alphabet.
    ByteLevel,
    /// SentencePiece: `▁` for spaces, `<0xNN>` byte tokens.
    Spm,
    /// Anything else: the engine's own decoding of the single token.
    Engine,
}

fn style_of(decoder: Option<&DecoderWrapper>) -> PieceStyle {
    match decoder {
        Some(DecoderWrapper::ByteLevel(_)) => PieceStyle::ByteLevel,
        Some(
            DecoderWrapper::Metaspace(_)
            | DecoderWrapper::ByteFallback(_)
            | DecoderWrapper::Replace(_),
        ) => PieceStyle::Spm,
        Some(DecoderWrapper::Sequence(seq)) => {
            let styles: Vec<PieceStyle> = seq
                .get_decoders()
                .iter()
                .map(|d| style_of(Some(d)))
                .collect();
            if styles.contains(&PieceStyle::ByteLevel) {
                PieceStyle::ByteLevel
            } else if styles.contains(&PieceStyle::Spm) {
                PieceStyle::Spm
            } else {
                PieceStyle::Engine
            }
        }
        _ => PieceStyle::Engine,
    }
}

pub(crate) fn load(path: &Path) -> Result<Loaded, TokenizerError> {
    let bad = |reason: String| TokenizerError::BadJson {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut parse = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
    parse
        .with_truncation(None)
        .map_err(|e| bad(format!("cannot turn truncation off: {e}")))?;
    parse.with_padding(None);
    parse.set_encode_special_tokens(false);
    let mut plain = parse.clone();
    plain.set_encode_special_tokens(true);

    let n_vocab = parse.get_vocab_size(true);
    let n_u32 = u32::try_from(n_vocab).map_err(|_| bad(format!("{n_vocab} tokens is too many")))?;
    let (pieces, control) = pieces_of(&parse, n_u32)?;
    let (mut bos, mut eos) = default_bos_eos(&parse)?;
    let mut chat_template = None;
    let config_path = path.with_file_name("tokenizer_config.json");
    if config_path.is_file() {
        let config = read_config(&config_path, &parse)?;
        bos = config.bos.or(bos);
        eos = config.eos.or(eos);
        chat_template = config.chat_template;
    }
    Ok(Loaded {
        parse,
        plain,
        pieces,
        control,
        bos,
        eos,
        chat_template,
    })
}

/// Every token's bytes as the decoder writes them, and whether it is a special added token.
fn pieces_of(
    tk: &tokenizers::Tokenizer,
    n_vocab: u32,
) -> Result<(Vec<Vec<u8>>, Vec<bool>), TokenizerError> {
    let added = tk.get_added_tokens_decoder();
    let style = style_of(tk.get_decoder());
    let mut pieces = Vec::with_capacity(n_vocab as usize);
    let mut control = Vec::with_capacity(n_vocab as usize);
    for id in 0..n_vocab {
        if let Some(tok) = added.get(&id) {
            pieces.push(tok.content.clone().into_bytes());
            control.push(tok.special);
            continue;
        }
        control.push(false);
        let Some(text) = tk.id_to_token(id) else {
            pieces.push(Vec::new());
            continue;
        };
        pieces.push(match style {
            PieceStyle::ByteLevel => byte_level_decode(&text),
            PieceStyle::Spm => {
                parse_byte_token(&text).map_or_else(|| spm_piece_bytes(&text), |b| vec![b])
            }
            PieceStyle::Engine => tk
                .decode(&[id], false)
                .map_err(|e| TokenizerError::engine("decoding one token", e))?
                .into_bytes(),
        });
    }
    Ok((pieces, control))
}

/// BOS / EOS: what the post-processor puts around a text, else a special token that looks
/// like one.
fn default_bos_eos(
    tk: &tokenizers::Tokenizer,
) -> Result<(Option<u32>, Option<u32>), TokenizerError> {
    let added = tk.get_added_tokens_decoder();
    let special = |names: &[&str]| {
        names.iter().find_map(|t| {
            added
                .iter()
                .find(|(_, a)| a.special && a.content == *t)
                .map(|(&id, _)| id)
        })
    };
    let (bos, eos) = probe_added_around(tk)?;
    Ok((
        bos.or_else(|| special(&["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"])),
        eos.or_else(|| special(CONTROL_LOOKING)),
    ))
}

/// What a `tokenizer_config.json` adds to the tokenizer.
struct TokenizerConfig {
    bos: Option<u32>,
    eos: Option<u32>,
    chat_template: Option<String>,
}

fn read_config(path: &Path, tk: &tokenizers::Tokenizer) -> Result<TokenizerConfig, TokenizerError> {
    let bad = |reason: String| TokenizerError::BadJson {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let config: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let token_id = |key: &str| {
        let v = config.get(key)?;
        let content = v.as_str().or_else(|| v.get("content")?.as_str())?;
        tk.token_to_id(content)
    };
    let chat_template = match config.get("chat_template") {
        Some(Value::String(t)) => Some(t.clone()),
        // A list of named templates: the one named "default", else the first.
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| named.first())
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_owned),
        _ => None,
    };
    Ok(TokenizerConfig {
        bos: token_id("bos_token"),
        eos: token_id("eos_token"),
        chat_template,
    })
}

/// The tokens the post-processor adds before and after a probe text (first before, last after).
fn probe_added_around(
    tk: &tokenizers::Tokenizer,
) -> Result<(Option<u32>, Option<u32>), TokenizerError> {
    let probe = "a";
    let bare = tk
        .encode(probe, false)
        .map_err(|e| TokenizerError::engine("probing the post-processor", e))?;
    let full = tk
        .encode(probe, true)
        .map_err(|e| TokenizerError::engine("probing the post-processor", e))?;
    let (bare, full) = (bare.get_ids(), full.get_ids());
    if bare.is_empty() || full.len() <= bare.len() {
        return Ok((None, None));
    }
    let Some(at) = full.windows(bare.len()).position(|w| w == bare) else {
        return Ok((None, None));
    };
    Ok((
        full[..at].first().copied(),
        full[at + bare.len()..].last().copied(),
    ))
}
