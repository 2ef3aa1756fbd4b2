//! Pre-tokenizers for byte-level BPE vocabularies, chosen by `tokenizer.ggml.pre`.
//!
//! Before BPE merges run, llama.cpp cuts the text into words with a list of regular
//! expressions applied one after another: each expression splits every piece left by the
//! previous one into its matches and the stretches between them (both kept). The table here
//! follows llama.cpp's `llm_tokenizer_bpe` (src/llama-vocab.cpp) and its custom splitters in
//! src/unicode.cpp, which implement the GPT-2 expression *with* its final `\s+` alternative.
//! Case-insensitive contractions are spelled `'[sS]` rather than `(?i:'s)` as llama.cpp does,
//! so Unicode case folding (`ſ`, the Kelvin sign) cannot widen them.
//!
//! The expressions are handed to the `tokenizers` engine as a sequence of `Split` (isolated)
//! pre-tokenizers followed by a `ByteLevel` step without its own regex.

use tokenizers::SplitDelimiterBehavior;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

use super::TokenizerError;

/// GPT-2's word splitter.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's: case-insensitive contractions, a letter run with one leading non-letter, numbers
/// in groups of at most three, punctuation runs swallowing following newlines.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Every digit on its own (StarCoder, SmolLM, …), before GPT-2's splitter.
const DIGIT: &str = r"\p{N}";

/// llama.cpp's fallback for BPE files without (or with `default`) pre-tokenizer name.
const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];

const FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"];

/// How one family of `tokenizer.ggml.pre` names pre-tokenizes, and the vocabulary flags
/// llama.cpp sets along with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PreTokenizerSpec {
    /// The family's name (for messages).
    pub family: &'static str,
    /// The expressions, applied in order.
    pub regexes: &'static [&'static str],
    /// A word that is itself in the vocabulary is one token, merges or not (Llama 3).
    pub ignore_merges: bool,
    /// Whether BOS is added when the file has no `tokenizer.ggml.add_bos_token`.
    pub add_bos_default: bool,
}

/// The `tokenizer.ggml.pre` names understood, by family.
const TABLE: &[(&[&str], PreTokenizerSpec)] = &[
    (
        &["default"],
        PreTokenizerSpec {
            family: "default",
            regexes: DEFAULT,
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        // "gpt2" is not a name llama.cpp writes ("gpt-2" is) but is accepted as its alias.
        &[
            "gpt-2",
            "gpt2",
            "phi-2",
            "gigachat",
            "a.x-4.0",
            "mellum",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
            "exaone4",
        ],
        PreTokenizerSpec {
            family: "gpt2",
            regexes: &[GPT2],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        PreTokenizerSpec {
            family: "starcoder",
            regexes: &[DIGIT, GPT2],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        PreTokenizerSpec {
            family: "llama3",
            regexes: &[LLAMA3],
            ignore_merges: true,
            add_bos_default: true,
        },
    ),
    (
        &["dbrx", "smaug-bpe"],
        PreTokenizerSpec {
            family: "dbrx",
            regexes: &[LLAMA3],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "solar-open",
        ],
        PreTokenizerSpec {
            family: "qwen2",
            regexes: &[QWEN2],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &["falcon"],
        PreTokenizerSpec {
            family: "falcon",
            regexes: FALCON,
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
];

/// Every supported `tokenizer.ggml.pre` name.
pub fn supported_pre_tokenizers() -> Vec<&'static str> {
    TABLE
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect()
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value; a missing or empty name means
/// llama.cpp's `default`.
pub(crate) fn lookup(pre: Option<&str>) -> Result<PreTokenizerSpec, TokenizerError> {
    let name = match pre {
        None | Some("") => "default",
        Some(p) => p,
    };
    TABLE
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|&(_, spec)| spec)
        .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer {
            pre: name.to_owned(),
            supported: supported_pre_tokenizers(),
        })
}

impl PreTokenizerSpec {
    /// The `tokenizers` pre-tokenizer: each expression as an isolating split, then the
    /// byte-level mapping.
    pub(crate) fn build(&self) -> Result<PreTokenizerWrapper, TokenizerError> {
        let mut steps = Vec::with_capacity(self.regexes.len() + 1);
        for re in self.regexes {
            let split = Split::new(
                SplitPattern::Regex((*re).to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Build(format!("pre-tokenizer regex {re:?}: {e}")))?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    use super::*;

    /// The words `pre` cuts `text` into (byte-level decoded back to text).
    fn words(pre: &str, text: &str) -> Vec<String> {
        let pt = lookup(Some(pre)).unwrap().build().unwrap();
        let mut s = PreTokenizedString::from(text);
        pt.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(w, _, _)| String::from_utf8(super::super::bytes::byte_level_decode(w)).unwrap())
            .collect()
    }

    #[test]
    fn every_family_compiles() {
        for name in supported_pre_tokenizers() {
            lookup(Some(name)).unwrap().build().unwrap();
        }
        assert_eq!(lookup(None).unwrap().family, "default");
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let err = lookup(Some("no-such-pre")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no-such-pre") && msg.contains("smollm") && msg.contains("llama3"),
            "{msg}"
        );
    }

    #[test]
    fn gpt2_splits() {
        assert_eq!(
            words("gpt-2", "Who's there?  I 'tis"),
            ["Who", "'s", " there", "?", " ", " I", " '", "tis"]
        );
        assert_eq!(
            words("gpt-2", "a 123\t\tb  "),
            ["a", " 123", "\t", "\t", "b", "  "]
        );
    }

    #[test]
    fn smollm_splits_digits() {
        assert_eq!(
            words("smollm", "in 2024!"),
            ["in", " ", "2", "0", "2", "4", "!"]
        );
    }

    #[test]
    fn llama3_and_qwen2_split_numbers_differently() {
        assert_eq!(
            words("llama3", "x 12345 YOU'RE\n\n"),
            ["x", " ", "123", "45", " YOU", "'RE", "\n\n"]
        );
        assert_eq!(words("qwen2", "12a"), ["1", "2", "a"]);
    }
}
