//! Building a `tokenizers` engine from a [`VocabSpec`] (GGUF vocabulary data).
//!
//! * `gpt2` (byte-level BPE): a BPE model from the vocabulary and merges, the pre-tokenizer
//!   named by `tokenizer.ggml.pre`, a byte-level decoder.
//! * `llama` (SentencePiece): a BPE model with byte fallback whose merges are derived from the
//!   scores (every split of a piece into two pieces, ranked by the whole piece's score, as
//!   llama.cpp's SPM tokenizer merges the highest-scoring pair first); a normalizer writes
//!   spaces as `▁` and puts one before the text when `add_space_prefix` says so (llama.cpp
//!   does so for text at the start or after a special token, which is every text fragment).
//!
//! BOS/EOS insertion is recorded as a template post-processor, so the engine exported with
//! [`super::Tokenizer::to_tokenizer_json`] behaves the same when loaded elsewhere.
//!
//! Control, unknown and user-defined tokens are registered as added tokens, but are cut out of
//! the input before the engine sees it (see [`super::special`]), so the engine itself never
//! matches special-token text.

use tokenizers::AddedToken;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::template::{Piece, Sequence as TemplateSequence, TemplateProcessing};

use super::bytes::{SPM_SPACE, byte_level_decode, parse_byte_token, spm_piece_bytes};
use super::pretokenize;
use super::spec::{SUPPORTED_MODELS, token_type};
use super::special::{SpecialSplitter, SpecialToken};
use super::{TokenizerError, VocabSpec};

/// Which of llama.cpp's tokenizer algorithms a GGUF vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algo {
    Bpe,
    Spm { add_space_prefix: bool },
}

/// Everything built from a spec.
pub(crate) struct Built {
    pub engine: tokenizers::Tokenizer,
    pub splitter: SpecialSplitter,
    pub algo: Algo,
    /// The bytes each token stands for.
    pub pieces: Vec<Vec<u8>>,
    /// Control tokens (type 3, or control-looking).
    pub control: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

pub(crate) fn build(spec: &VocabSpec) -> Result<Built, TokenizerError> {
    let algo = algo_of(spec)?;
    let n_u32 = checked_len(spec)?;
    let (texts, vocab) = texts_and_vocab(spec, n_u32)?;
    let (bos, eos) = special_ids(spec, algo, n_u32)?;
    let types: Vec<i32> = (0..texts.len()).map(|i| spec.effective_type(i)).collect();
    let control: Vec<bool> = types.iter().map(|&t| t == token_type::CONTROL).collect();
    let pieces = pieces_of(&texts, &types, algo);
    let specials = specials_of(&texts, &types);
    let added: Vec<AddedToken> = specials
        .iter()
        .map(|s| AddedToken::from(s.text.clone(), !s.always).normalized(false))
        .collect();

    let mut engine = match algo {
        Algo::Bpe => bpe_engine(spec, vocab)?,
        Algo::Spm { .. } => spm_engine(spec, &texts, &types, vocab)?,
    };
    engine.add_special_tokens(&added);
    let text_of = |id: Option<u32>| {
        let id = id?;
        let text = texts.get(usize::try_from(id).ok()?)?;
        Some((text.clone(), id))
    };
    let template = post_processor(
        if spec.add_bos { text_of(bos) } else { None },
        if spec.add_eos { text_of(eos) } else { None },
    )?;
    if let Some(t) = template {
        engine.with_post_processor(Some(PostProcessorWrapper::Template(t)));
    }
    // Special-token text is cut out beforehand; the engine must treat any that reaches it as text.
    engine.set_encode_special_tokens(true);

    Ok(Built {
        engine,
        splitter: SpecialSplitter::new(specials),
        algo,
        pieces,
        control,
        bos,
        eos,
    })
}

fn algo_of(spec: &VocabSpec) -> Result<Algo, TokenizerError> {
    Ok(match spec.model.as_str() {
        "gpt2" => Algo::Bpe,
        "llama" => Algo::Spm {
            add_space_prefix: spec.add_space_prefix,
        },
        other => {
            return Err(TokenizerError::UnsupportedModel {
                model: other.to_owned(),
                supported: SUPPORTED_MODELS,
            });
        }
    })
}

/// The vocabulary's size, checked against the token types and scores given with it.
fn checked_len(spec: &VocabSpec) -> Result<u32, TokenizerError> {
    let n = spec.tokens.len();
    if n == 0 {
        return Err(TokenizerError::inconsistent("the vocabulary has no tokens"));
    }
    let n_u32 = u32::try_from(n)
        .map_err(|_| TokenizerError::inconsistent(format!("{n} tokens is too many")))?;
    if !spec.token_types.is_empty() && spec.token_types.len() != n {
        return Err(TokenizerError::inconsistent(format!(
            "{} token types for {n} tokens",
            spec.token_types.len()
        )));
    }
    if !spec.scores.is_empty() && spec.scores.len() != n {
        return Err(TokenizerError::inconsistent(format!(
            "{} scores for {n} tokens",
            spec.scores.len()
        )));
    }
    Ok(n_u32)
}

/// Token texts as llama.cpp keeps them (an empty text gets a placeholder) and the vocabulary
/// they make; a text given twice is refused.
fn texts_and_vocab(spec: &VocabSpec, n_u32: u32) -> Result<(Vec<String>, Vocab), TokenizerError> {
    let texts: Vec<String> = spec
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect();
    let mut vocab = Vocab::default();
    for (id, t) in (0..n_u32).zip(&texts) {
        if let Some(first) = vocab.insert(t.clone(), id) {
            return Err(TokenizerError::inconsistent(format!(
                "token {t:?} appears twice (ids {first} and {id})"
            )));
        }
    }
    Ok((texts, vocab))
}

/// BOS and EOS ids: as given (SentencePiece vocabularies default to llama.cpp's 1 and 2), every
/// special id checked against the vocabulary.
fn special_ids(
    spec: &VocabSpec,
    algo: Algo,
    n_u32: u32,
) -> Result<(Option<u32>, Option<u32>), TokenizerError> {
    let n = n_u32 as usize;
    let (bos, eos) = match algo {
        Algo::Spm { .. } => (spec.bos.or(Some(1)), spec.eos.or(Some(2))),
        Algo::Bpe => (spec.bos, spec.eos),
    };
    for (what, id) in [
        ("bos", bos),
        ("eos", eos),
        ("unknown", spec.unk),
        ("padding", spec.pad),
    ] {
        if let Some(id) = id
            && id >= n_u32
        {
            return Err(TokenizerError::inconsistent(format!(
                "{what} token id {id} is outside the vocabulary of {n} tokens"
            )));
        }
    }
    if spec.add_bos && bos.is_none() {
        return Err(TokenizerError::inconsistent(
            "add_bos_token is set but there is no bos token id",
        ));
    }
    if spec.add_eos && eos.is_none() {
        return Err(TokenizerError::inconsistent(
            "add_eos_token is set but there is no eos token id",
        ));
    }
    Ok((bos, eos))
}

/// The bytes each token stands for.
fn pieces_of(texts: &[String], types: &[i32], algo: Algo) -> Vec<Vec<u8>> {
    texts
        .iter()
        .zip(types)
        .map(|(text, &ty)| match ty {
            token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN => {
                text.clone().into_bytes()
            }
            token_type::NORMAL => match algo {
                Algo::Bpe => byte_level_decode(text),
                Algo::Spm { .. } => spm_piece_bytes(text),
            },
            token_type::BYTE => parse_byte_token(text).map(|b| vec![b]).unwrap_or_default(),
            // llama.cpp renders unused and undefined tokens as nothing.
            _ => Vec::new(),
        })
        .collect()
}

/// Control, user-defined and unknown tokens: cut out of the text before the engine runs.
fn specials_of(texts: &[String], types: &[i32]) -> Vec<SpecialToken> {
    (0u32..)
        .zip(texts.iter().zip(types))
        .filter(|(_, (_, ty))| {
            matches!(
                **ty,
                token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
            )
        })
        .map(|(id, (text, &ty))| SpecialToken {
            text: text.clone(),
            id,
            always: ty == token_type::USER_DEFINED,
        })
        .collect()
}

/// Splits a `"left right"` merge at its first space after the first byte, as llama.cpp does.
fn split_merge(m: &str) -> Option<(&str, &str)> {
    // Byte-wise: a space byte is never inside a multi-byte character, so both halves are
    // whole strings.
    let pos = m.as_bytes().iter().skip(1).position(|&b| b == b' ')? + 1;
    Some((m.get(..pos)?, m.get(pos + 1..)?))
}

fn bpe_engine(spec: &VocabSpec, vocab: Vocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let pre = pretokenize::lookup(spec.pre.as_deref())?;
    let mut merges = Vec::with_capacity(spec.merges.len());
    for (i, m) in spec.merges.iter().enumerate() {
        let (a, b) = split_merge(m).ok_or_else(|| {
            TokenizerError::inconsistent(format!("merge {i} ({m:?}) is not two tokens"))
        })?;
        for part in [a, b, &format!("{a}{b}")] {
            if !vocab.contains_key(part) {
                return Err(TokenizerError::inconsistent(format!(
                    "merge {i} ({m:?}) names {part:?}, which is not in the vocabulary"
                )));
            }
        }
        merges.push((a.to_owned(), b.to_owned()));
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
    let mut tk = tokenizers::Tokenizer::new(model);
    tk.with_pre_tokenizer(Some(pre.build()?));
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
    Ok(tk)
}

/// SentencePiece as BPE: every way of writing a piece as two pieces is a merge, ranked by the
/// piece's score (highest first, then by id).
fn spm_engine(
    spec: &VocabSpec,
    texts: &[String],
    types: &[i32],
    vocab: Vocab,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let score = |id: usize| spec.scores.get(id).copied().unwrap_or(0.0);
    let mut ranked: Vec<(f32, usize, usize)> = Vec::new(); // (score, id, split byte)
    for (id, text) in texts.iter().enumerate() {
        if types[id] == token_type::BYTE {
            continue;
        }
        for (k, _) in text.char_indices().skip(1) {
            let (a, b) = text.split_at(k);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((score(id), id, k));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let merges: Vec<(String, String)> = ranked
        .into_iter()
        .map(|(_, id, k)| {
            let (a, b) = texts[id].split_at(k);
            (a.to_owned(), b.to_owned())
        })
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = spec.unk.and_then(|u| texts.get(usize::try_from(u).ok()?)) {
        builder = builder.unk_token(unk.clone());
    }
    let model = builder
        .build()
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
    let mut tk = tokenizers::Tokenizer::new(model);
    let space = SPM_SPACE.to_string();
    let build_err = |e: tokenizers::Error| TokenizerError::Build(e.to_string());
    let mut norm = Vec::new();
    if spec.add_space_prefix {
        norm.push(NormalizerWrapper::Prepend(Prepend::new(space.clone())));
    }
    norm.push(NormalizerWrapper::Replace(
        Replace::new(" ", space.clone()).map_err(build_err)?,
    ));
    tk.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(
        norm,
    ))));
    let mut dec = vec![
        DecoderWrapper::Replace(Replace::new(space, " ").map_err(build_err)?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if spec.add_space_prefix {
        dec.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(dec))));
    Ok(tk)
}

/// A template piece given as is (the engine only converts pieces from its own string syntax,
/// which cannot spell every token text).
struct AsIs(Piece);

impl TryFrom<AsIs> for Piece {
    type Error = String;

    fn try_from(p: AsIs) -> Result<Self, String> {
        Ok(p.0)
    }
}

/// A template adding `bos` before and `eos` after the text, if either is given.
fn post_processor(
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
) -> Result<Option<TemplateProcessing>, TokenizerError> {
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let special = |t: &(String, u32), type_id| Piece::SpecialToken {
        id: t.0.clone(),
        type_id,
    };
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (type_id, is_a) in [(0, true), (1, false)] {
        let part = if is_a {
            TemplateSequence::A
        } else {
            TemplateSequence::B
        };
        let pieces: Vec<Piece> = bos
            .iter()
            .map(|b| special(b, type_id))
            .chain([Piece::Sequence { id: part, type_id }])
            .chain(eos.iter().map(|e| special(e, type_id)))
            .collect();
        if is_a {
            single.extend(pieces.iter().cloned().map(AsIs));
        }
        pair.extend(pieces.into_iter().map(AsIs));
    }
    let tokens: Vec<(String, u32)> = bos.iter().chain(eos.iter()).cloned().collect();
    let err = |e: String| TokenizerError::Build(format!("post-processor: {e}"));
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(err)?
        .try_pair(pair)
        .map_err(err)?
        .special_tokens(tokens)
        .build()
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_split_like_llama_cpp() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("  a"), Some((" ", "a")));
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge(""), None);
    }
}
