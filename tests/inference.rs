//! The decoder against llama.cpp: golden logits for random models (regenerated here bit for
//! bit from the seeds in tests/fixtures/llama/models.json, see
//! scripts/reference/golden_logits.py) and for SmolLM2 when it is in the cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedtune_client::gguf::GgufFile;
use fedtune_client::llama::random::{RandomShape, random_model};
use fedtune_client::llama::{LlamaModel, Logits, argmax};
use fedtune_client::quant::GgmlType;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama")
}

struct Golden {
    name: String,
    ty: GgmlType,
    model: LlamaModel,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

fn ty_of(name: &str) -> GgmlType {
    match name {
        "F32" => GgmlType::F32,
        "F16" => GgmlType::F16,
        "Q8_0" => GgmlType::Q8_0,
        "Q4_0" => GgmlType::Q4_0,
        "Q4_1" => GgmlType::Q4_1,
        other => panic!("fixture type {other}"),
    }
}

fn goldens() -> Vec<Golden> {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("models.json")).unwrap())
            .unwrap();
    index
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let u = |k: &str| m[k].as_u64().unwrap() as usize;
            let shape = RandomShape {
                dim: u("dim"),
                heads: u("heads"),
                kv_heads: u("kv_heads"),
                ffn: u("ffn"),
                layers: u("layers"),
                vocab: u("vocab"),
                tied: m["tied"].as_bool().unwrap(),
            };
            let ty = ty_of(m["type"].as_str().unwrap());
            let want: Vec<u32> = m["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            let (writer, tokens) =
                random_model(&shape, ty, m["seed"].as_u64().unwrap(), want.len()).unwrap();
            assert_eq!(
                tokens, want,
                "token stream of {} (generator out of step with Python)",
                m["name"]
            );
            let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
            let model = LlamaModel::from_file(Arc::new(file)).unwrap();
            let name = m["name"].as_str().unwrap().to_string();
            let (shape, logits) =
                fedtune::npy::read_f32(&fixtures().join(format!("{name}.npy"))).unwrap();
            assert_eq!(shape, vec![tokens.len(), model.cfg.n_vocab]);
            Golden {
                name,
                ty,
                model,
                tokens,
                logits,
            }
        })
        .collect()
}

struct Comparison {
    max_abs: f32,
    mean_abs: f32,
    max_logit: f32,
    argmax_agree: f32,
}

fn compare(ours: &[f32], theirs: &[f32], n_vocab: usize) -> Comparison {
    assert_eq!(ours.len(), theirs.len());
    let diffs: Vec<f32> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let rows = ours.len() / n_vocab;
    let agree = ours
        .chunks_exact(n_vocab)
        .zip(theirs.chunks_exact(n_vocab))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    Comparison {
        max_abs: diffs.iter().copied().fold(0.0, f32::max),
        mean_abs: diffs.iter().sum::<f32>() / diffs.len() as f32,
        max_logit: theirs.iter().map(|v| v.abs()).fold(0.0, f32::max),
        argmax_agree: agree as f32 / rows as f32,
    }
}

#[test]
fn random_models_match_llama_cpp_logits() {
    let mut failures = Vec::new();
    for g in goldens() {
        let mut cache = g.model.new_cache(None);
        let ours = g.model.forward(&mut cache, &g.tokens, Logits::All).unwrap();
        let c = compare(&ours, &g.logits, g.model.cfg.n_vocab);
        eprintln!(
            "{:>10}: max|Δ| {:.2e} mean|Δ| {:.2e} (max|logit| {:.3}), argmax agreement {:.1}%",
            g.name,
            c.max_abs,
            c.mean_abs,
            c.max_logit,
            100.0 * c.argmax_agree
        );
        let ok = if g.ty == GgmlType::F32 {
            c.max_abs <= 1e-3 * c.max_logit
        } else {
            c.argmax_agree >= 0.99
        };
        if !ok {
            failures.push(g.name.clone());
        }
    }
    assert!(
        failures.is_empty(),
        "logits differ from llama.cpp for {failures:?}"
    );
}

#[test]
fn batched_prompt_equals_one_token_at_a_time() {
    let g = goldens()
        .into_iter()
        .find(|g| g.name == "odd_q4_1")
        .unwrap();
    let mut cache = g.model.new_cache(None);
    let batched = g.model.forward(&mut cache, &g.tokens, Logits::All).unwrap();
    let mut cache = g.model.new_cache(None);
    let mut stepped = Vec::new();
    for t in &g.tokens {
        stepped.extend(g.model.forward(&mut cache, &[*t], Logits::Last).unwrap());
    }
    let c = compare(&batched, &stepped, g.model.cfg.n_vocab);
    assert!(c.max_abs < 1e-4, "batched vs stepped max|Δ| {}", c.max_abs);
    assert_eq!(cache.pos(), g.tokens.len());
}

#[test]
fn sliding_window_bounds_memory_and_keeps_recent_context() {
    let g = goldens().into_iter().find(|g| g.name == "gqa_f32").unwrap();
    let cfg = &g.model.cfg;
    let window = 16;
    let mut full = g.model.new_cache(None);
    let full_logits = g.model.forward(&mut full, &g.tokens, Logits::All).unwrap();
    let mut win = g.model.new_cache(Some(window));
    let mut win_logits = Vec::new();
    // A prompt batch longer than the window, then single tokens.
    win_logits.extend(
        g.model
            .forward(&mut win, &g.tokens[..24], Logits::All)
            .unwrap(),
    );
    for t in &g.tokens[24..] {
        win_logits.extend(g.model.forward(&mut win, &[*t], Logits::Last).unwrap());
    }
    let per_pos = cfg.n_layers * cfg.kv_dim() * 2 * 4;
    assert!(
        win.memory_bytes() <= window * per_pos,
        "{} > {}",
        win.memory_bytes(),
        window * per_pos
    );
    assert!(full.memory_bytes() >= g.tokens.len() * per_pos);
    let v = cfg.n_vocab;
    // Within the window the two caches see the same positions: identical logits.
    let c = compare(&win_logits[..window * v], &full_logits[..window * v], v);
    assert!(c.max_abs < 1e-5, "inside the window max|Δ| {}", c.max_abs);
    // Past it they differ (older positions are gone) but stay finite.
    assert!(win_logits.iter().all(|x| x.is_finite()));
    let c = compare(&win_logits[window * v..], &full_logits[window * v..], v);
    assert!(c.max_abs > 0.0);
}

#[test]
fn bad_token_and_full_context_are_errors() {
    let g = goldens().into_iter().next().unwrap();
    let mut cache = g.model.new_cache(None);
    let err = g
        .model
        .forward(&mut cache, &[g.model.cfg.n_vocab as u32], Logits::Last)
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    assert_eq!(cache.pos(), 0, "a refused batch changes nothing");
    let too_long = vec![1u32; g.model.cfg.context_len + 1];
    let err = g
        .model
        .forward(&mut cache, &too_long, Logits::None)
        .unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
}

fn smollm2_path() -> Option<PathBuf> {
    let cache = std::env::var_os("FEDTUNE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/fedtune")))?;
    let p = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (run scripts/fetch-model.sh)",
            p.display()
        );
        None
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(path) = smollm2_path() else { return };
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("smollm2.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = fixture["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let model = LlamaModel::open(&path).unwrap();
    let mut cache = model.new_cache(None);
    let logits = model.forward(&mut cache, &tokens, Logits::All).unwrap();
    let v = model.cfg.n_vocab;
    let (mut agree, mut sum_abs, mut n_abs, mut worst_rel) = (0, 0.0f32, 0, 0.0f32);
    let positions = fixture["positions"].as_array().unwrap();
    for (row, pos) in logits.chunks_exact(v).zip(positions) {
        let ids: Vec<usize> = pos["top_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let vals: Vec<f32> = pos["top_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        if argmax(row) as usize == ids[0] {
            agree += 1;
        }
        for (&i, &l) in ids.iter().zip(&vals) {
            sum_abs += (row[i] - l).abs();
            n_abs += 1;
        }
        worst_rel =
            worst_rel.max((row[ids[0]] - vals[0]).abs() / pos["max_abs"].as_f64().unwrap() as f32);
    }
    let rate = agree as f32 / positions.len() as f32;
    eprintln!(
        "SmolLM2 Q4_1: argmax agreement {:.1}% over {} positions, mean|Δ| of the top-8 logits {:.4}, worst top-1 |Δ|/max|logit| {:.4}",
        100.0 * rate,
        positions.len(),
        sum_abs / n_abs as f32,
        worst_rel
    );
    // llama.cpp disagrees with itself on ~5% of these positions between its batched and
    // single-token paths (this deep model amplifies last-bit differences through the 8-bit
    // activation rounding), so this holds only because the decoder follows the float
    // operation order of llama.cpp's batched CPU path (see llama/ggml_math.rs).
    assert!(rate >= 0.99, "argmax agreement {rate}");
}

#[test]
fn smollm2_generates_sensibly_past_a_sliding_window() {
    let Some(path) = smollm2_path() else { return };
    let model = LlamaModel::open(&path).unwrap();
    let tok = fedtune_client::tokenizer::Tokenizer::from_gguf(model.file()).unwrap();
    let prompt = tok
        .encode("<|im_start|>user\nTell me a long story about a fox and a crow.<|im_end|>\n<|im_start|>assistant\n", true, true)
        .unwrap();
    let window = 48;
    let mut cache = model.new_cache(Some(window));
    let mut sampler = fedtune_client::llama::Sampler::new(fedtune_client::llama::SamplerConfig {
        temperature: 0.0,
        ..Default::default()
    });
    let mut generated = Vec::new();
    model
        .generate(&mut cache, &prompt, 160, &mut sampler, &[], |t| {
            generated.push(t);
            true
        })
        .unwrap();
    // The cache never shrinks, so its size now is its peak.
    let peak = cache.memory_bytes();
    let per_pos = model.cfg.n_layers * model.cfg.kv_dim() * 2 * 4;
    assert_eq!(cache.pos(), prompt.len() + generated.len() - 1);
    assert!(
        peak <= window * per_pos,
        "KV cache {peak} B > {window} positions"
    );
    let text = tok.decode(&generated).unwrap();
    // Sensible: the full-context model finds the windowed continuation likely, and it is words.
    let mut all = prompt.clone();
    all.extend(&generated);
    let nll = model.token_nll(&all, prompt.len()).unwrap();
    let ppl = (nll.iter().sum::<f64>() / nll.len() as f64).exp();
    let wordy = text
        .chars()
        .filter(|c| c.is_alphabetic() || c.is_whitespace() || ",.'!?;:\"-".contains(*c))
        .count();
    eprintln!(
        "window {window}, {} tokens past it, perplexity under the full model {ppl:.2}:\n{text}",
        generated.len() + prompt.len() - window
    );
    assert!(ppl < 8.0, "perplexity {ppl}");
    assert!(wordy as f64 >= 0.95 * text.chars().count() as f64, "{text}");
}
