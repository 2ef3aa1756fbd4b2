//! Gemma 3 270M (Q4_K_M) against llama.cpp: the model's configuration as read from its GGUF
//! metadata, and its logits over 200+ positions of natural text within llama.cpp's own spread
//! between its settings (tests/fixtures/llama/gemma3.json, from
//! scripts/reference/golden_logits_gemma3.py). Skipped, saying so, without the model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::llama::{compare_top8, fixtures, gemma3_path, read_json, u32s};
use fedtune_llm::llama::{LlamaModel, Logits, RopeOrder};

#[test]
fn gemma3_config_is_read_from_metadata() {
    let Some(path) = gemma3_path() else { return };
    let model = LlamaModel::open(&path).unwrap();
    let cfg = &model.cfg;
    assert_eq!(
        (
            cfg.n_layers,
            cfg.dim,
            cfg.ffn_dim,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.head_dim
        ),
        (18, 640, 2048, 4, 1, 256)
    );
    assert_eq!((cfg.n_vocab, cfg.rope_order), (262_144, RopeOrder::NeoX));
    let g = cfg.gemma3.as_ref().unwrap();
    assert_eq!((g.sliding_window, g.pattern), (Some(512), 6));
    assert_eq!(g.query_scale, 1.0 / 16.0);
    // Layers 5, 11 and 17 are global, with the file's RoPE base; the rest are local.
    let global: Vec<usize> = (0..18).filter(|&l| cfg.window_of(l).is_none()).collect();
    assert_eq!(global, [5, 11, 17]);
    assert_eq!(cfg.rope_of(5), (1_000_000.0, 1.0));
    assert_eq!(cfg.rope_of(0), (10_000.0, 1.0));
    // The output head is the embedding matrix.
    assert_eq!(model.weights.output.info.name, "token_embd.weight");
}

#[test]
fn gemma3_logits_within_llama_cpp_spread() {
    let Some(path) = gemma3_path() else { return };
    let fixture = read_json(&fixtures("llama/gemma3.json"));
    let tokens = u32s(&fixture["tokens"]);
    assert!(tokens.len() >= 200, "{} positions", tokens.len());
    let model = LlamaModel::open(&path).unwrap();
    let mut cache = model.new_cache(None);
    let logits = model.forward(&mut cache, &tokens, Logits::All).unwrap();
    let positions = fixture["positions"].as_array().unwrap();
    let (argmax, mean_top8, worst_top1) = compare_top8(&logits, positions, model.cfg.n_vocab);
    let spread = &fixture["spread"];
    let theirs = |k: &str| -> Vec<f64> {
        ["flash_attn", "f16_cache"]
            .iter()
            .map(|s| spread[s][k].as_f64().unwrap())
            .collect()
    };
    let (their_mean, their_argmax) = (theirs("mean_abs_top8"), theirs("argmax"));
    eprintln!(
        "Gemma 3 270M: argmax agreement {:.1}% over {} positions, mean|Δ| of the top-8 logits \
         {mean_top8:.4}, worst top-1 |Δ|/max|logit| {worst_top1:.4}; llama.cpp's own spread \
         (flash attention, f16 cache): mean|Δ| {their_mean:?}, argmax {their_argmax:?}",
        100.0 * argmax,
        tokens.len(),
    );
    let widest = their_mean.iter().copied().fold(0.0, f64::max);
    let lowest = their_argmax.iter().copied().fold(1.0, f64::min);
    assert!(
        f64::from(mean_top8) <= widest,
        "mean|Δ| {mean_top8} is beyond llama.cpp's spread {widest}"
    );
    assert!(
        f64::from(argmax) >= lowest,
        "argmax agreement {argmax} is below llama.cpp's own {lowest}"
    );
}

/// Training Gemma 3 is not implemented yet: the main job says so before starting a federation.
#[test]
fn gemma3_simulate_is_refused_up_front() {
    if gemma3_path().is_none() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_fedtune"))
        .args(["simulate", "--model", "gemma3", "--rounds", "1", "--out"])
        .arg(out.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("training `gemma3` models is not supported"),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("declined its task"),
        "devices were started: {stderr}"
    );
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}
