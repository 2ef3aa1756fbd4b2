//! fedtune's tokenizer against llama.cpp's on SmolLM2-135M-Instruct's vocabulary.
//!
//! The ids in tests/fixtures/tokenizer/smollm2.json come from llama.cpp's `llama_tokenize`
//! (scripts/reference/golden_tokens.py). The model file is fetched by scripts/fetch-model.sh
//! into ~/.cache/fedtune/models; without it the test fails with how to fetch it, unless
//! FEDTUNE_SKIP_REAL_MODELS=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use fedtune_llm::gguf::GgufFile;
use fedtune_llm::tokenizer::{Tokenizer, VocabSpec};
use serde_json::Value;

/// SmolLM2 where scripts/fetch-model.sh puts it. A missing model fails the test with how to
/// fetch it, unless `FEDTUNE_SKIP_REAL_MODELS=1` opts out.
fn model_path() -> Option<PathBuf> {
    let cache = std::env::var_os("FEDTUNE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fedtune")))
        .expect("neither FEDTUNE_CACHE nor HOME is set");
    let p = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("FEDTUNE_SKIP_REAL_MODELS").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: {} is absent and FEDTUNE_SKIP_REAL_MODELS=1",
            p.display()
        );
        return None;
    }
    panic!(
        "{} is absent: run scripts/fetch-model.sh to fetch SmolLM2-135M-Instruct \
         (or set FEDTUNE_SKIP_REAL_MODELS=1 to skip the tests that need it)",
        p.display()
    )
}

struct Case {
    text: String,
    add_special: bool,
    parse_special: bool,
    ids: Vec<u32>,
    /// Another `tokenizer.ggml.pre` to tokenize under (else the file's own).
    pre: Option<String>,
    /// `Some("spm")`: the SentencePiece vocabulary derived by [`spm_from_bpe`].
    vocab: Option<String>,
}

fn cases() -> Vec<Case> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/smollm2.json");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let items: Vec<Value> = serde_json::from_str(&text).expect("the fixture is a JSON list");
    items
        .iter()
        .map(|c| {
            let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
            let flag = |k: &str| c[k].as_bool().expect(k);
            Case {
                text: text("text").expect("text"),
                add_special: flag("add_special"),
                parse_special: flag("parse_special"),
                ids: c["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()).expect("id"))
                    .collect(),
                pre: text("pre"),
                vocab: text("vocab"),
            }
        })
        .collect()
}

/// Long because it runs every golden case under each of its settings (vocabulary, pre-tokenizer,
/// special-token handling) and reports all the cases that differ at once, not the first.
#[test]
fn smollm2_tokens_match_llama_cpp() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let spec = VocabSpec::from_gguf(&file).unwrap();
    assert_eq!(
        (spec.model.as_str(), spec.pre.as_deref()),
        ("gpt2", Some("smollm"))
    );
    assert_eq!(
        (spec.tokens.len(), spec.merges.len(), spec.add_bos),
        (49152, 48900, false)
    );
    let tk = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tk.n_vocab(), 49152);
    assert_eq!((tk.bos(), tk.eos()), (Some(1), Some(2)));
    assert!(tk.is_special(2) && !tk.is_special(100));
    assert!(
        tk.chat_template()
            .is_some_and(|t| t.contains("<|im_start|>"))
    );

    let cases = cases();
    assert!(cases.len() >= 200, "{} cases", cases.len());
    let mut others: BTreeMap<String, Tokenizer> = BTreeMap::new();
    // The same engines exported as tokenizer.json and loaded back.
    let via_json = |tk: &Tokenizer| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(tk.to_tokenizer_json(false).unwrap().as_bytes())
            .unwrap();
        Tokenizer::from_json_file(f.path()).unwrap()
    };
    let json_main = via_json(&tk);
    let mut json_spm: Option<Tokenizer> = None;
    let mut failures = Vec::new();
    for c in &cases {
        let tk = match (&c.pre, &c.vocab) {
            (None, None) => &tk,
            (Some(pre), None) => others.entry(pre.clone()).or_insert_with(|| {
                let mut spec = spec.clone();
                spec.pre = Some(pre.clone());
                Tokenizer::from_spec(&spec).unwrap()
            }),
            (None, Some(v)) if v == "spm" => others
                .entry("spm vocabulary".into())
                .or_insert_with(|| Tokenizer::from_spec(&spm_from_bpe(&spec)).unwrap()),
            other => panic!("unknown case kind {other:?}"),
        };
        let ids = tk.encode(&c.text, c.add_special, c.parse_special).unwrap();
        if ids != c.ids {
            failures.push(format!(
                "{:?} (pre {:?}, add_special {}, parse_special {}):\n  llama.cpp {:?}\n  fedtune   {:?}",
                c.text, c.pre, c.add_special, c.parse_special, c.ids, ids
            ));
        }
        let json = match (&c.pre, &c.vocab) {
            (None, None) => Some(&json_main),
            (None, Some(_)) => Some(&*json_spm.get_or_insert_with(|| via_json(tk))),
            _ => None,
        };
        if let Some(json) = json {
            let json_ids = json
                .encode(&c.text, c.add_special, c.parse_special)
                .unwrap();
            if json_ids != c.ids {
                failures.push(format!(
                    "{:?} via tokenizer.json (vocab {:?}, add_special {}, parse_special {}):\n  llama.cpp {:?}\n  fedtune   {:?}",
                    c.text, c.vocab, c.add_special, c.parse_special, c.ids, json_ids
                ));
            }
        }
        let spm = c.vocab.is_some();
        if spm && c.add_special {
            // BOS is rendered as "<s>" and the space prefix is kept after it.
            continue;
        }
        // Lossless round trip (special tokens decode to their text, too).
        assert_eq!(
            tk.decode(&ids).unwrap(),
            c.text,
            "round trip of {:?}",
            c.text
        );
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| tk.token_bytes(id).unwrap())
            .collect();
        if spm && !c.text.is_empty() {
            // SentencePiece pieces carry the space put before the text.
            assert_eq!(
                bytes,
                format!(" {}", c.text).as_bytes(),
                "token bytes of {:?}",
                c.text
            );
        } else {
            assert_eq!(bytes, c.text.as_bytes(), "token bytes of {:?}", c.text);
        }
    }
    assert!(
        others.len() >= 7,
        "pre-tokenizers checked: {:?}",
        others.keys()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The SentencePiece vocabulary golden_tokens.py derives from a byte-level one: `<unk>`,
/// `<s>`, `</s>`, the 256 `<0xNN>` byte tokens, then every normal token whose bytes are valid
/// UTF-8 with spaces as U+2581 (first occurrence kept), scored -(original id).
fn spm_from_bpe(bpe: &VocabSpec) -> VocabSpec {
    let direct: Vec<u8> = (b'!'..=b'~')
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut decode = std::collections::HashMap::new();
    for &b in &direct {
        decode.insert(char::from(b), b);
    }
    for (k, b) in (0..=255u8).filter(|b| !direct.contains(b)).enumerate() {
        decode.insert(char::from_u32(256 + u32::try_from(k).unwrap()).unwrap(), b);
    }
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut token_types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        token_types.push(6);
        scores.push(0.0);
    }
    let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();
    for (i, (tok, &ty)) in bpe.tokens.iter().zip(&bpe.token_types).enumerate() {
        if ty != 1 {
            continue;
        }
        let Some(bytes) = tok
            .chars()
            .map(|c| decode.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
        else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let text = text.replace(' ', "\u{2581}");
        if seen.insert(text.clone()) {
            tokens.push(text);
            token_types.push(1);
            #[allow(clippy::cast_precision_loss)]
            scores.push(-(i as f32));
        }
    }
    VocabSpec::sentencepiece(tokens, token_types, scores)
}
