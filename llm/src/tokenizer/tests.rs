//! Tokenizers built from tiny hand-made vocabularies and `tokenizer.json` files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use super::bytes::char_of_byte;
use super::*;

/// The byte-level alphabet, in byte order.
fn byte_chars() -> Vec<String> {
    (0..=255u8).map(|b| char_of_byte(b).to_string()).collect()
}

const BPE_MERGES: &[&str] = &[
    "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "' t", "'t i",
    "'ti s",
];

/// A byte-level BPE vocabulary: 3 control tokens, the 256 byte characters, the merge results.
fn bpe_spec(pre: &str) -> VocabSpec {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend(byte_chars());
    for m in BPE_MERGES {
        let merged = m.replace(' ', "");
        if !tokens.contains(&merged) {
            tokens.push(merged);
        }
    }
    let mut token_types = vec![token_type::NORMAL; tokens.len()];
    token_types[..3].fill(token_type::CONTROL);
    VocabSpec {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        token_types,
        merges: BPE_MERGES.iter().map(|m| (*m).to_owned()).collect(),
        tokens,
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        pad: None,
        add_bos: false,
        add_eos: false,
        add_space_prefix: false,
        chat_template: Some("{{ messages }}".into()),
        scores: Vec::new(),
    }
}

fn id_of(spec: &VocabSpec, text: &str) -> u32 {
    u32::try_from(spec.tokens.iter().position(|t| t == text).unwrap()).unwrap()
}

#[test]
fn bpe_from_spec_merges_and_round_trips() {
    let spec = bpe_spec("smollm");
    let tk = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(tk.n_vocab(), spec.tokens.len());
    assert_eq!(
        tk.encode("hello world", false, false).unwrap(),
        [id_of(&spec, "hello"), id_of(&spec, "Ġworld")]
    );
    for text in [
        "hello world",
        "",
        "  héllo\tworld \n\n",
        "日本語 🎉 'tis o'er",
        "12345 + 6",
        "<|im_start|>",
    ] {
        let ids = tk.encode(text, false, false).unwrap();
        assert_eq!(tk.decode(&ids).unwrap(), text, "{ids:?}");
    }
    // Digits are split one by one for smollm.
    let digits = tk.encode("2024", false, false).unwrap();
    assert_eq!(digits.len(), 4);
    assert_eq!(tk.chat_template(), Some("{{ messages }}"));
    assert_eq!((tk.bos(), tk.eos()), (Some(1), Some(2)));
    assert!(tk.is_special(2) && !tk.is_special(id_of(&spec, "hello")) && !tk.is_special(u32::MAX));
}

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let spec = bpe_spec("gpt-2");
    let tk = Tokenizer::from_spec(&spec).unwrap();
    let text = "<|im_start|>hello<|im_end|>";
    assert_eq!(
        tk.encode(text, false, true).unwrap(),
        [1, id_of(&spec, "hello"), 2]
    );
    let plain = tk.encode(text, false, false).unwrap();
    assert!(!plain.contains(&1) && !plain.contains(&2), "{plain:?}");
    assert_eq!(tk.decode(&plain).unwrap(), text);
    assert_eq!(tk.decode(&[1, id_of(&spec, "hello"), 2]).unwrap(), text);
    assert_eq!(tk.token_bytes(id_of(&spec, "Ġworld")).unwrap(), b" world");
    assert_eq!(tk.token_bytes(2).unwrap(), b"<|im_end|>");
}

#[test]
fn add_special_follows_the_spec() {
    let mut spec = bpe_spec("gpt-2");
    let tk = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(
        tk.encode("hello", true, false).unwrap(),
        [id_of(&spec, "hello")]
    );
    spec.add_bos = true;
    spec.add_eos = true;
    let tk = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(
        tk.encode("hello", true, false).unwrap(),
        [1, id_of(&spec, "hello"), 2]
    );
    assert_eq!(tk.encode("", true, false).unwrap(), [1, 2]);
    assert_eq!(
        tk.encode("hello", false, false).unwrap(),
        [id_of(&spec, "hello")]
    );
}

#[test]
fn partial_characters_stream_as_bytes() {
    let spec = bpe_spec("gpt-2");
    let tk = Tokenizer::from_spec(&spec).unwrap();
    let ids = tk.encode("é", false, false).unwrap();
    assert_eq!(ids.len(), 2);
    let mut bytes = tk.token_bytes(ids[0]).unwrap();
    assert_eq!(bytes, [0xC3]);
    bytes.extend(tk.token_bytes(ids[1]).unwrap());
    assert_eq!(bytes, "é".as_bytes());
    assert_eq!(tk.decode(&ids[..1]).unwrap(), "\u{FFFD}");
}

#[test]
fn bad_vocabularies_are_refused() {
    let mut spec = bpe_spec("gpt-2");
    spec.model = "bert".into();
    let e = Tokenizer::from_spec(&spec).unwrap_err();
    assert!(
        matches!(e, TokenizerError::UnsupportedModel { .. }) && e.to_string().contains("gpt2"),
        "{e}"
    );

    let spec = bpe_spec("deepseek-llm");
    let e = Tokenizer::from_spec(&spec).unwrap_err();
    assert!(
        matches!(e, TokenizerError::UnsupportedPreTokenizer { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("deepseek-llm") && e.to_string().contains("qwen2"),
        "{e}"
    );

    let mut spec = bpe_spec("gpt-2");
    spec.merges.push("Ġ zebra".into());
    let e = Tokenizer::from_spec(&spec).unwrap_err();
    assert!(
        matches!(e, TokenizerError::InconsistentVocab(_)) && e.to_string().contains("zebra"),
        "{e}"
    );

    let mut spec = bpe_spec("gpt-2");
    spec.merges.push("nospace".into());
    assert!(matches!(
        Tokenizer::from_spec(&spec),
        Err(TokenizerError::InconsistentVocab(_))
    ));

    let mut spec = bpe_spec("gpt-2");
    spec.token_types.pop();
    let e = Tokenizer::from_spec(&spec).unwrap_err();
    assert!(e.to_string().contains("token types"), "{e}");

    let mut spec = bpe_spec("gpt-2");
    spec.tokens.push("hello".into());
    spec.token_types.push(token_type::NORMAL);
    assert!(
        Tokenizer::from_spec(&spec)
            .unwrap_err()
            .to_string()
            .contains("twice")
    );

    let mut spec = bpe_spec("gpt-2");
    spec.eos = Some(1_000_000);
    assert!(matches!(
        Tokenizer::from_spec(&spec),
        Err(TokenizerError::InconsistentVocab(_))
    ));

    let mut spec = bpe_spec("gpt-2");
    spec.bos = None;
    spec.add_bos = true;
    assert!(matches!(
        Tokenizer::from_spec(&spec),
        Err(TokenizerError::InconsistentVocab(_))
    ));

    assert!(matches!(
        Tokenizer::from_spec(&VocabSpec::default()),
        Err(TokenizerError::UnsupportedModel { .. })
    ));
    let empty = VocabSpec {
        model: "gpt2".into(),
        ..VocabSpec::default()
    };
    assert!(matches!(
        Tokenizer::from_spec(&empty),
        Err(TokenizerError::InconsistentVocab(_))
    ));
}

#[test]
fn ids_out_of_range_are_errors() {
    let tk = Tokenizer::from_spec(&bpe_spec("gpt-2")).unwrap();
    let n = u32::try_from(tk.n_vocab()).unwrap();
    assert!(matches!(tk.decode(&[0, n]), Err(TokenizerError::IdOutOfRange { id, .. }) if id == n));
    assert!(matches!(
        tk.token_bytes(u32::MAX),
        Err(TokenizerError::IdOutOfRange { .. })
    ));
}

#[test]
fn other_pre_tokenizers_build() {
    for pre in [
        "default",
        "llama-bpe",
        "qwen2",
        "falcon",
        "starcoder",
        "dbrx",
    ] {
        let tk = Tokenizer::from_spec(&bpe_spec(pre)).unwrap();
        let text = "hello world 12345 it's\n\n ok";
        assert_eq!(
            tk.decode(&tk.encode(text, false, false).unwrap()).unwrap(),
            text,
            "{pre}"
        );
    }
    let mut spec = bpe_spec("x");
    spec.pre = None;
    Tokenizer::from_spec(&spec).unwrap();
}

/// A SentencePiece vocabulary: specials, 256 byte tokens, a few pieces with scores.
fn spm_spec() -> VocabSpec {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut token_types = vec![
        token_type::UNKNOWN,
        token_type::CONTROL,
        token_type::CONTROL,
    ];
    let mut scores = vec![0.0; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        token_types.push(token_type::BYTE);
        scores.push(0.0);
    }
    let pieces = [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("ll", -3.0),
        ("▁h", -4.0),
        ("▁he", -5.0),
        ("▁hell", -6.0),
        ("▁hello", -7.0),
        ("▁w", -8.0),
        ("or", -9.0),
        ("▁wor", -10.0),
        ("ld", -11.0),
        ("▁world", -12.0),
    ];
    for (p, s) in pieces {
        tokens.push(p.into());
        token_types.push(token_type::NORMAL);
        scores.push(s);
    }
    VocabSpec::sentencepiece(tokens, token_types, scores)
}

#[test]
fn sentencepiece_from_spec() {
    let spec = spm_spec();
    let tk = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(
        tk.encode("hello world", true, false).unwrap(),
        [1, id_of(&spec, "▁hello"), id_of(&spec, "▁world")]
    );
    // Byte fallback for characters with no piece.
    let ids = tk.encode("hé", false, false).unwrap();
    assert_eq!(
        ids,
        [
            id_of(&spec, "▁h"),
            id_of(&spec, "<0xC3>"),
            id_of(&spec, "<0xA9>")
        ]
    );
    // A space goes before text that follows a special token.
    assert_eq!(
        tk.encode("<s>hello", false, true).unwrap(),
        [1, id_of(&spec, "▁hello")]
    );
    for text in ["hello world", " hello  world ", "héllo\nwörld", ""] {
        let ids = tk.encode(text, false, false).unwrap();
        assert_eq!(tk.decode(&ids).unwrap(), text, "{ids:?}");
    }
    assert!(tk.is_special(1) && !tk.is_special(0));
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A byte-level BPE `tokenizer.json` with `<s>` added before every text.
fn tiny_tokenizer_json() -> String {
    let specials = ["<s>", "<|im_end|>"];
    let mut vocab: Vec<String> = specials.map(String::from).to_vec();
    vocab.extend(byte_chars());
    let merges = BPE_MERGES;
    for m in merges {
        let merged = m.replace(' ', "");
        if !vocab.contains(&merged) {
            vocab.push(merged);
        }
    }
    let vocab_json: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}: {i}", json_str(t)))
        .collect();
    let merges_json: Vec<String> = merges.iter().map(|m| json_str(m)).collect();
    let added: Vec<String> = specials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"{{"id": {i}, "content": {}, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}"#,
                json_str(t)
            )
        })
        .collect();
    format!(
        r#"{{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [{added}],
  "normalizer": null,
  "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},
  "post_processor": {{
    "type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}],
    "pair": [{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
    "special_tokens": {{"<s>": {{"id": "<s>", "ids": [0], "tokens": ["<s>"]}}}}
  }},
  "decoder": {{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}},
  "model": {{
    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {{{vocab}}},
    "merges": [{merges}]
  }}
}}"#,
        added = added.join(", "),
        vocab = vocab_json.join(", "),
        merges = merges_json.join(", "),
    )
}

#[test]
fn tokenizer_json_loads_and_encodes() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(tiny_tokenizer_json().as_bytes()).unwrap();
    let tk = Tokenizer::from_json_file(f.path()).unwrap();
    let hello = 2 + 256 + 3; // "he", "ll", "hell", "hello" follow the 258 first tokens
    assert_eq!(tk.encode("hello", false, false).unwrap(), [hello]);
    assert_eq!(tk.encode("hello", true, false).unwrap(), [0, hello]);
    assert_eq!((tk.bos(), tk.eos()), (Some(0), Some(1)));
    assert_eq!(
        tk.encode("hello<|im_end|>", false, true).unwrap(),
        [hello, 1]
    );
    let plain = tk.encode("hello<|im_end|>", false, false).unwrap();
    assert!(!plain.contains(&1) && plain.len() > 2, "{plain:?}");
    for text in ["hello world", "héllo  wörld\n\t 'tis 🎉", "<|im_end|>x"] {
        let ids = tk.encode(text, false, false).unwrap();
        assert_eq!(tk.decode(&ids).unwrap(), text);
    }
    assert!(tk.is_special(1) && !tk.is_special(hello));
    assert_eq!(tk.token_bytes(1).unwrap(), b"<|im_end|>");
    assert_eq!(tk.token_bytes(2 + 32).unwrap(), b" ");
    assert_eq!(tk.chat_template(), None);
}

#[test]
fn bad_tokenizer_json_names_the_file() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"{ not json").unwrap();
    let e = Tokenizer::from_json_file(f.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::BadJson { .. }), "{e}");
    assert!(
        e.to_string().contains(&f.path().display().to_string()),
        "{e}"
    );
    let missing = f.path().with_extension("missing");
    assert!(matches!(
        Tokenizer::from_json_file(&missing),
        Err(TokenizerError::BadJson { .. })
    ));
}

#[test]
fn tokenizer_config_beside_the_json_supplies_template_and_eos() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": {"content": "<|im_end|>", "special": true},
            "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}"#,
    )
    .unwrap();
    let tk = Tokenizer::from_json_file(&dir.path().join("tokenizer.json")).unwrap();
    assert_eq!((tk.bos(), tk.eos()), (Some(0), Some(1)));
    assert_eq!(
        tk.chat_template(),
        Some("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    );

    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        "{\"chat_template\": ",
    )
    .unwrap();
    let e = Tokenizer::from_json_file(&dir.path().join("tokenizer.json")).unwrap_err();
    assert!(e.to_string().contains("tokenizer_config.json"), "{e}");
}

#[test]
fn gguf_vocabularies_export_as_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mut spec) in [("bpe", bpe_spec("llama-bpe")), ("spm", spm_spec())] {
        spec.add_eos = true;
        let tk = Tokenizer::from_spec(&spec).unwrap();
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, tk.to_tokenizer_json(true).unwrap()).unwrap();
        let back = Tokenizer::from_json_file(&path).unwrap();
        for text in ["hello world", " héllo  world\n", "<|im_end|>hello</s>", ""] {
            for (add, parse) in [(false, false), (true, false), (true, true)] {
                assert_eq!(
                    back.encode(text, add, parse).unwrap(),
                    tk.encode(text, add, parse).unwrap(),
                    "{name}: {text:?} add {add} parse {parse}"
                );
            }
        }
        // BOS is only known to the JSON side when the template adds it.
        let bos = if spec.add_bos { tk.bos() } else { None };
        assert_eq!((back.bos(), back.eos()), (bos, tk.eos()), "{name}");
        assert_eq!(back.n_vocab(), tk.n_vocab());
    }
}

#[test]
fn tokenizers_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Tokenizer>();
}
