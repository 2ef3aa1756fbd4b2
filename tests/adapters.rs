//! LoRA adapters against llama.cpp and through their files: fedtune's exported GGUF LoRA
//! loaded by llama.cpp gives fedtune's logits (fixtures from scripts/reference/golden_lora.py);
//! PEFT and GGUF files round-trip; a merged model gives base + adapter; bad adapters are
//! refused with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::llama::{
    compare, compare_top8, exact_kernels, fixtures, model_of, read_json, smollm2_path, u32s,
};
use fedtune_llm::gguf::GgufFile;
use fedtune_llm::llama::{LlamaModel, Logits, Proj};
use fedtune_llm::lora::{self, LoraAdapter, LoraConfig, gguf_adapter, merge, peft};
use fedtune_llm::quant::GgmlType;

fn targets(s: &str) -> Vec<Proj> {
    if s == "all" {
        return Proj::ALL.to_vec();
    }
    s.split(',').map(|t| Proj::parse(t).unwrap()).collect()
}

/// The adapter a fixture case describes, made as `fedtune bench random-adapter` makes it.
fn adapter_of(case: &serde_json::Value, model: &LlamaModel) -> LoraAdapter {
    let config = LoraConfig {
        rank: case["rank"].as_u64().unwrap() as usize,
        alpha: case["alpha"].as_f64().unwrap() as f32,
        dropout: 0.0,
        targets: targets(case["targets"].as_str().unwrap()),
        seed: case["seed"].as_u64().unwrap(),
    };
    LoraAdapter::random(config, &model.cfg, case["b_scale"].as_f64().unwrap() as f32).unwrap()
}

fn logits(model: &LlamaModel, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(None);
    model.forward(&mut cache, tokens, Logits::All).unwrap()
}

#[test]
fn llama_cpp_with_the_exported_gguf_lora_gives_our_logits() {
    let cases = read_json(&fixtures("lora/cases.json"));
    let exact = exact_kernels();
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (mut model, tokens) = model_of(case, "model_seed");
        let base = logits(&model, &tokens);
        let adapter = adapter_of(case, &model);
        model.set_adapter(Some(Arc::new(adapter))).unwrap();
        let ours = logits(&model, &tokens);
        let (_, theirs) = fedtune::npy::read_f32(&fixtures(&format!("lora/{name}.npy"))).unwrap();
        let v = model.cfg.n_vocab;
        let c = compare(&ours, &theirs, v);
        let moved = compare(&base, &theirs, v);
        eprintln!(
            "{name:>16}: max|Δ| {:.2e} mean|Δ| {:.2e} (max|logit| {:.3}), argmax {:.1}%; without the adapter max|Δ| {:.3}",
            c.max_abs,
            c.mean_abs,
            c.max_logit,
            100.0 * c.argmax_agree,
            moved.max_abs
        );
        // docs/on-device.md: quantized bases bit for bit, F32 within 1.1e-6 (the scalar
        // fallback within looser bounds, same argmax).
        let bound = match (case["type"].as_str(), exact) {
            (Some("F32"), true) => 1.1e-6,
            (_, true) => 0.0,
            (_, false) => 1e-5,
        };
        let ok = c.max_abs <= bound && c.argmax_agree == 1.0;
        // The adapter must matter, or the comparison proves nothing.
        if !ok || moved.max_abs < 0.1 {
            failures.push(name.to_string());
        }
    }
    assert!(failures.is_empty(), "differ from llama.cpp: {failures:?}");
}

#[test]
fn smollm2_with_an_adapter_matches_llama_cpp() {
    let Some(path) = smollm2_path() else { return };
    let fixture = read_json(&fixtures("lora/smollm2.json"));
    let mut model = LlamaModel::open(&path).unwrap();
    let tokens = u32s(&fixture["tokens"]);
    let adapter = adapter_of(&fixture, &model);
    model.set_adapter(Some(Arc::new(adapter))).unwrap();
    let ours = logits(&model, &tokens);
    let positions = fixture["positions"].as_array().unwrap();
    let (rate, mean_top, worst) = compare_top8(&ours, positions, model.cfg.n_vocab);
    eprintln!(
        "SmolLM2 Q4_1 + rank-8 q,k,v,o adapter: argmax agreement {:.1}% over {} positions, mean|Δ| top-8 {mean_top:.4}, worst top-1 |Δ|/max|logit| {worst:.4}",
        100.0 * rate,
        positions.len()
    );
    if exact_kernels() {
        assert_eq!(mean_top, 0.0, "top-8 logits differ from llama.cpp's");
        assert_eq!(rate, 1.0, "argmax agreement {rate}");
    } else {
        assert!(rate >= 0.9, "argmax agreement {rate}");
    }
}

/// The gqa F32 random model of the fixtures and a rank-4 adapter on every projection.
fn small_model_and_adapter() -> (LlamaModel, Vec<u32>, LoraAdapter) {
    let cases = read_json(&fixtures("lora/cases.json"));
    let case = &cases[0];
    assert_eq!(case["type"], "F32");
    let (model, tokens) = model_of(case, "model_seed");
    let adapter = adapter_of(case, &model);
    (model, tokens, adapter)
}

#[test]
fn peft_and_gguf_files_round_trip_with_peft_names_and_shapes() {
    let (model, _, adapter) = small_model_and_adapter();
    let dir = tempfile::tempdir().unwrap();
    let peft_dir = dir.path().join("peft");
    peft::save(&adapter, &model.cfg, &peft_dir, Some("base.gguf")).unwrap();
    let back = lora::load(&peft_dir, &model.cfg).unwrap();
    assert_eq!(back, adapter);
    assert_eq!(lora::recorded_base(&peft_dir).as_deref(), Some("base.gguf"));

    // PEFT's names and shapes, and its config fields.
    let bytes = std::fs::read(peft_dir.join(peft::WEIGHTS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), 2 * adapter.modules.len());
    let a = st
        .tensor("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), [4, 64]);
    let b = st
        .tensor("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.shape(), [64, 4]);
    // q_proj's B rows are in Hugging Face's order: within each head of 16, rows 0..8 are the
    // GGUF rows 0, 2, 4, … (llama.cpp's converter interleaves the two RoPE halves).
    let q = adapter.module(0, Proj::Q).unwrap();
    let hf_b: Vec<f32> = st
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let r = q.rank;
    assert_eq!(hf_b[r..2 * r], q.b[2 * r..3 * r]);
    assert_eq!(hf_b[8 * r..9 * r], q.b[r..2 * r]);
    let cfg = read_json(&peft_dir.join(peft::CONFIG_FILE));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 16);
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!([
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ])
    );

    let gguf_path = dir.path().join("a.gguf");
    gguf_adapter::save(&adapter, &model.cfg, &gguf_path, None).unwrap();
    assert_eq!(lora::load(&gguf_path, &model.cfg).unwrap(), adapter);
    let file = GgufFile::open(&gguf_path).unwrap();
    let t = file.tensor("blk.1.ffn_up.weight.lora_b").unwrap();
    assert_eq!(t.dims, [4, 96]);
    assert_eq!(
        file.metadata().get_str("general.type").unwrap(),
        Some("adapter")
    );
}

#[test]
fn a_merged_model_gives_base_plus_adapter() {
    let (mut model, tokens, adapter) = small_model_and_adapter();
    let from_writer = |w: fedtune_llm::gguf::GgufWriter| {
        let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        LlamaModel::from_file(Arc::new(file)).unwrap()
    };
    let merged_f32 = from_writer(merge::merge(&model, &adapter, None, |_, _, _| {}).unwrap());
    let merged_q8 =
        from_writer(merge::merge(&model, &adapter, Some(GgmlType::Q8_0), |_, _, _| {}).unwrap());
    let base_q8 = from_writer(
        fedtune_llm::llama::requantize(model.file(), GgmlType::Q8_0, |_, _, _| {}).unwrap(),
    );
    let base = logits(&model, &tokens);
    let v = model.cfg.n_vocab;
    // What re-quantizing to Q8_0 alone does to the base's logits: the merged Q8_0 model may
    // be that far from base + adapter, no further.
    let q8_noise = compare(&logits(&base_q8, &tokens), &base, v).mean_abs;
    model.set_adapter(Some(Arc::new(adapter))).unwrap();
    let want = logits(&model, &tokens);
    let exact = compare(&logits(&merged_f32, &tokens), &want, v);
    let q8 = compare(&logits(&merged_q8, &tokens), &want, v);
    eprintln!(
        "merged f32 vs base + adapter: max|Δ| {:.2e}; merged q8_0: mean|Δ| {:.2e} (q8_0 alone on the base: {q8_noise:.2e}), argmax {:.1}%",
        exact.max_abs,
        q8.mean_abs,
        100.0 * q8.argmax_agree
    );
    // docs/on-device.md: within 1.8e-6 (the AVX2/AVX-512 kernels' f32 sums).
    let bound = if exact_kernels() { 1.8e-6 } else { 1e-5 };
    assert!(
        exact.max_abs <= bound,
        "merged f32: max|Δ| {}",
        exact.max_abs
    );
    assert!(
        q8.mean_abs < 2.0 * q8_noise,
        "merged q8_0: mean|Δ| {} vs quantization noise {q8_noise}",
        q8.mean_abs
    );
}

#[test]
fn adapters_that_do_not_fit_are_refused_with_the_reason() {
    let (model, _, adapter) = small_model_and_adapter();
    let dir = tempfile::tempdir().unwrap();
    let err = |p: &std::path::Path| lora::load(p, &model.cfg).unwrap_err().to_string();

    // An adapter for another model (the odd shape: dim 96, 1 kv head).
    let (other, _) = model_of(&read_json(&fixtures("lora/cases.json"))[1], "model_seed");
    let wrong = dir.path().join("wrong");
    peft::save(&adapter, &model.cfg, &wrong, None).unwrap();
    let e = lora::load(&wrong, &other.cfg).unwrap_err().to_string();
    assert!(
        e.contains("has shape [4, 64], the base model needs [4, 96]"),
        "{e}"
    );

    // Rank 0, DoRA, a regex for target_modules.
    let edit = |field: &str, value: serde_json::Value| {
        let d = dir.path().join(format!("edit-{field}"));
        peft::save(&adapter, &model.cfg, &d, None).unwrap();
        let mut cfg = read_json(&d.join(peft::CONFIG_FILE));
        cfg[field] = value;
        std::fs::write(d.join(peft::CONFIG_FILE), cfg.to_string()).unwrap();
        d
    };
    assert!(err(&edit("r", 0.into())).contains("rank must be at least 1"));
    assert!(err(&edit("use_dora", true.into())).contains("DoRA"));
    assert!(err(&edit("target_modules", ".*proj".into())).contains("target_modules"));
    // rsLoRA scales by alpha/√r, per-module ranks and alphas change shapes and scales: applied
    // as plain LoRA they would silently give another model.
    let e = err(&edit("use_rslora", true.into()));
    assert!(
        e.contains("use_rslora") && e.contains("rank-stabilised"),
        "{e}"
    );
    let e = err(&edit("rank_pattern", serde_json::json!({"q_proj": 8})));
    assert!(
        e.contains("rank_pattern") && e.contains("one rank and alpha"),
        "{e}"
    );
    let e = err(&edit("alpha_pattern", serde_json::json!({"v_proj": 32})));
    assert!(
        e.contains("alpha_pattern") && e.contains("one rank and alpha"),
        "{e}"
    );
    // Their neutral values load.
    lora::load(&edit("use_rslora", false.into()), &model.cfg).unwrap();
    lora::load(&edit("rank_pattern", serde_json::json!({})), &model.cfg).unwrap();

    // A NaN in a tensor is named, never loaded.
    let mut nan = adapter.clone();
    nan.modules[3].b[5] = f32::NAN;
    let nan_path = dir.path().join("nan.gguf");
    gguf_adapter::save(&nan, &model.cfg, &nan_path, None).unwrap();
    let e = err(&nan_path);
    assert!(
        e.contains("blk.0.attn_output.weight.lora_b holds a non-finite value at index 5"),
        "{e}"
    );

    // A model file is not an adapter; a missing path says so.
    let model_path = dir.path().join("model.gguf");
    std::fs::write(&model_path, model.file().as_bytes()).unwrap();
    assert!(err(&model_path).contains("not a LoRA adapter"));
    assert!(err(&dir.path().join("absent")).contains("cannot open"));

    // A tensor the base has no place for.
    let mut extra = adapter.clone();
    extra.config.targets = vec![Proj::Q];
    extra.modules.retain(|m| m.proj == Proj::Q);
    let d = dir.path().join("extra");
    peft::save(&adapter, &model.cfg, &d, None).unwrap();
    let mut cfg = read_json(&d.join(peft::CONFIG_FILE));
    cfg["target_modules"] = serde_json::json!(["q_proj"]);
    std::fs::write(d.join(peft::CONFIG_FILE), cfg.to_string()).unwrap();
    let e = err(&d);
    assert!(e.contains("does not fit the base model"), "{e}");
}
