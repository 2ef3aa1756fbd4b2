//! llama.cpp loads the full models that `fedtune pretrain`, `quantize` and `merge` write, and
//! computes fedtune's logits from them. The fixtures come from
//! scripts/reference/golden_written.py: it ran the same commands (scalar kernels, one thread,
//! so the bytes are the same on every x86-64 CPU) and had llama.cpp evaluate the files. Here
//! the commands run again; the file's digest must be the fixture's, so llama.cpp's logits are
//! of these very bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::llama::{compare, exact_kernels, fixtures, read_json, u32s};
use fedtune_llm::llama::{LlamaModel, Logits};

/// Runs a case's commands in `dir`; returns the last file written.
fn write(commands: &[serde_json::Value], dir: &std::path::Path) -> std::path::PathBuf {
    let mut out = None;
    for args in commands {
        let args: Vec<String> = args
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().replace("{dir}", dir.to_str().unwrap()))
            .collect();
        let run = Command::new(env!("CARGO_BIN_EXE_fedtune"))
            .args(&args)
            .env("FEDTUNE_KERNELS", "scalar")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "fedtune {args:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        out = Some(match args.iter().position(|a| a == "--out") {
            Some(i) => args[i + 1].clone(),
            None => args[2].clone(), // quantize IN OUT
        });
    }
    out.unwrap().into()
}

#[test]
fn llama_cpp_gives_our_logits_for_the_models_we_write() {
    let cases = read_json(&fixtures("written/cases.json"));
    let exact = exact_kernels();
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write(case["commands"].as_array().unwrap(), dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let digest = format!("{:032x}", twox_hash::XxHash3_128::oneshot(&bytes));
        assert_eq!(
            digest, case["xxh3"],
            "{name}: fedtune now writes other bytes; regenerate the fixtures with \
             scripts/reference/golden_written.py"
        );
        let model = LlamaModel::open(&path).unwrap();
        let tokens = u32s(&case["tokens"]);
        let mut cache = model.new_cache(None);
        let ours = model.forward(&mut cache, &tokens, Logits::All).unwrap();
        let (_, theirs) =
            fedtune::npy::read_f32(&fixtures(&format!("written/{name}.npy"))).unwrap();
        let c = compare(&ours, &theirs, model.cfg.n_vocab);
        eprintln!(
            "{name:>14}: {} bytes, max|Δ| {:.2e} (max|logit| {:.3}), argmax {:.1}%",
            bytes.len(),
            c.max_abs,
            c.max_logit,
            100.0 * c.argmax_agree
        );
        // Quantized files bit for bit, F32 within 1e-6, as for llama.cpp's own files.
        let bound = match (name.ends_with("f32"), exact) {
            (true, true) => 1e-6,
            (false, true) => 0.0,
            (_, false) => 1e-5,
        };
        if c.max_abs > bound || c.argmax_agree < 1.0 {
            failures.push(name.to_string());
        }
    }
    assert!(failures.is_empty(), "differ from llama.cpp: {failures:?}");
}
