//! Cutting special-token text out of the input before ordinary tokenization, as llama.cpp's
//! `tokenizer_st_partition` does.
//!
//! Control and unknown tokens (GGUF token types 3 and 2) are recognised only when the caller
//! asks for special-token parsing; user-defined tokens (type 4) always are. Tokens are tried
//! longest text first, each one over every text fragment left by the longer ones. llama.cpp
//! strips whitespace beside a special token only for tokens it flags by model name (Phi-3's
//! `rstrip`, a few BERT-style `<mask>` tokens' `lstrip`); GGUF files carry no such flags, so
//! whitespace around special tokens is kept and tokenized as text.

/// One special token to cut out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecialToken {
    pub text: String,
    pub id: u32,
    /// Recognised even when special-token parsing is off (user-defined tokens).
    pub always: bool,
}

/// A piece of the input: text still to tokenize, or a special token already recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The special tokens of a vocabulary, longest text first.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialSplitter {
    tokens: Vec<SpecialToken>,
}

impl SpecialSplitter {
    pub(crate) fn new(mut tokens: Vec<SpecialToken>) -> Self {
        tokens.retain(|t| !t.text.is_empty());
        // Longest first; equal lengths by id so the order does not depend on the input order.
        tokens.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        Self { tokens }
    }

    /// `text` cut into fragments; with `parse_special` off only `always` tokens are cut out.
    pub(crate) fn split<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = if text.is_empty() {
            Vec::new()
        } else {
            vec![Fragment::Text(text)]
        };
        for tok in &self.tokens {
            if !(parse_special || tok.always) {
                continue;
            }
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(tok.text.as_str())))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                let Fragment::Text(mut rest) = frag else {
                    next.push(frag);
                    continue;
                };
                while let Some(pos) = rest.find(tok.text.as_str()) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Token(tok.id));
                    rest = &rest[pos + tok.text.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }
}

#[cfg(test)]
mod tests {
    use super::Fragment::{Text, Token};
    use super::*;

    fn splitter() -> SpecialSplitter {
        SpecialSplitter::new(vec![
            SpecialToken {
                text: "<|im_start|>".into(),
                id: 1,
                always: false,
            },
            SpecialToken {
                text: "<|im_end|>".into(),
                id: 2,
                always: false,
            },
            SpecialToken {
                text: "<|im".into(),
                id: 3,
                always: true,
            },
            SpecialToken {
                text: String::new(),
                id: 4,
                always: true,
            },
        ])
    }

    #[test]
    fn cuts_special_tokens_when_asked() {
        let s = splitter();
        assert_eq!(
            s.split("<|im_start|>user\nhi<|im_end|>\n", true),
            [Token(1), Text("user\nhi"), Token(2), Text("\n")]
        );
        assert_eq!(s.split("<|im_end|><|im_end|>", true), [Token(2), Token(2)]);
        assert_eq!(s.split("", true), []);
    }

    #[test]
    fn user_defined_tokens_are_always_cut() {
        let s = splitter();
        assert_eq!(
            s.split("a<|im_start|>b", false),
            [Text("a"), Token(3), Text("_start|>b")]
        );
        assert_eq!(s.split("plain", false), [Text("plain")]);
    }
}
