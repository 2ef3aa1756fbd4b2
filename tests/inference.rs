//! The decoder against llama.cpp: golden logits for random models (regenerated here bit for
//! bit from the seeds in tests/fixtures/llama/models.json, see
//! scripts/reference/golden_logits.py) and for SmolLM2 when it is in the cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::llama::{
    compare, compare_top8, exact_kernels, fixtures, model_of, read_json, smollm2_path, u32s,
};
use fedtune_llm::llama::{LlamaModel, Logits};
use fedtune_llm::quant::GgmlType;

struct Golden {
    name: String,
    ty: GgmlType,
    model: LlamaModel,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

fn goldens() -> Vec<Golden> {
    let index = read_json(&fixtures("llama/models.json"));
    index
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let (model, tokens) = model_of(m, "seed");
            let name = m["name"].as_str().unwrap().to_string();
            let (shape, logits) =
                fedtune::npy::read_f32(&fixtures(&format!("llama/{name}.npy"))).unwrap();
            assert_eq!(shape, vec![tokens.len(), model.cfg.n_vocab]);
            Golden {
                name,
                ty: common::llama::ty_of(m["type"].as_str().unwrap()),
                model,
                tokens,
                logits,
            }
        })
        .collect()
}

#[test]
fn random_models_match_llama_cpp_logits() {
    let exact = exact_kernels();
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
        if g.model.cfg.gemma3.is_some() && matches!(g.ty, GgmlType::Q6K) {
            // Gemma 3 Q6_K is not yet llama.cpp's arithmetic (docs/on-device.md): the logits
            // agree on average to 1% of their range and the argmax mostly.
            if c.mean_abs > 0.01 * c.max_logit || c.argmax_agree < 0.9 {
                failures.push(format!("{}: mean|Δ| {:e}", g.name, c.mean_abs));
            }
            continue;
        }
        // The claims of docs/on-device.md: quantized models bit for bit, F32 within 1e-6,
        // F16 within 1.1e-3; Gemma 3's F32 and Q4_K within 1e-3 (F32: its GeGLU looks values
        // up in an f16 table, which turns f32-level differences into 1e-3 steps now and then;
        // Q4_K: not yet found); the scalar fallback within looser bounds and the same argmax.
        let gemma = g.model.cfg.gemma3.is_some();
        let bound = match (g.ty, exact) {
            (GgmlType::F32 | GgmlType::Q4K, true) if gemma => 1e-3,
            (GgmlType::F32, true) => 1e-6,
            (GgmlType::F16, _) => 1.1e-3,
            (_, true) => 0.0,
            (_, false) => 0.02,
        };
        if c.max_abs > bound || c.argmax_agree < 1.0 {
            failures.push(format!("{}: max|Δ| {:e} > {bound:e}", g.name, c.max_abs));
        }
    }
    assert!(
        failures.is_empty(),
        "logits differ from llama.cpp: {failures:?}"
    );
}

/// Q4_0 models with their matrices interleaved for the AVX2 / AVX-512 VNNI kernels (what the
/// inference commands run on such CPUs): llama.cpp's logits and the stored layout's, bit for
/// bit.
#[test]
fn interleaved_q4_0_models_match_llama_cpp_logits() {
    // The interleaved kernels exist at the AVX2 level and above.
    let simd = exact_kernels();
    for g in goldens().into_iter().filter(|g| g.ty == GgmlType::Q4_0) {
        let mut cache = g.model.new_cache(None);
        let plain = g.model.forward(&mut cache, &g.tokens, Logits::All).unwrap();
        let mut model = g.model.clone();
        let bytes = model.interleave_for_cpu();
        assert_eq!(bytes > 0, simd, "{}: interleaved {bytes} bytes", g.name);
        let mut cache = model.new_cache(None);
        let ours = model.forward(&mut cache, &g.tokens, Logits::All).unwrap();
        let c = compare(&ours, &g.logits, model.cfg.n_vocab);
        let same = compare(&ours, &plain, model.cfg.n_vocab);
        eprintln!(
            "{:>10} interleaved ({bytes} bytes): max|Δ| {:.2e} vs llama.cpp, {:.2e} vs the \
             stored layout",
            g.name, c.max_abs, same.max_abs
        );
        assert_eq!(
            same.max_abs, 0.0,
            "{}: interleaved vs stored layout",
            g.name
        );
        if simd {
            assert_eq!(c.max_abs, 0.0, "{}: interleaved vs llama.cpp", g.name);
        }
    }
}

/// Rows where `exact`'s top logit leads the runner-up by more than `margin`, and how many of
/// them keep their argmax in `other`.
fn argmax_kept(exact: &[f32], other: &[f32], n_vocab: usize, margin: f32) -> (usize, usize) {
    let (mut clear, mut kept) = (0, 0);
    for (e, o) in exact.chunks_exact(n_vocab).zip(other.chunks_exact(n_vocab)) {
        let top = fedtune_llm::llama::argmax(e) as usize;
        let second = e
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != top)
            .map(|(_, &v)| v)
            .fold(f32::NEG_INFINITY, f32::max);
        if e[top] - second > margin {
            clear += 1;
            kept += usize::from(fedtune_llm::llama::argmax(o) as usize == top);
        }
    }
    (clear, kept)
}

/// An f16 KV cache (llama.cpp's default, `--cache-type f16`) holds half the bytes, moves the
/// logits only by its rounding, and keeps the argmax wherever the f32 cache's top logit leads
/// by more than 0.05. (Random models' logits are nearly tied and each layer re-quantizes its
/// activations to 8 bits, so a few closer calls flip: overall agreement is printed, 94–100%.)
#[test]
fn f16_cache_halves_memory_and_keeps_the_argmax() {
    use fedtune_llm::llama::KvType;
    for g in goldens() {
        let mut c32 = g.model.new_cache(None);
        let mut c16 = g.model.new_cache_of(None, KvType::F16);
        let exact = g.model.forward(&mut c32, &g.tokens, Logits::All).unwrap();
        let half = g.model.forward(&mut c16, &g.tokens, Logits::All).unwrap();
        assert_eq!(c16.kv_type(), KvType::F16);
        assert_eq!(2 * c16.memory_bytes(), c32.memory_bytes(), "{}", g.name);
        let v = g.model.cfg.n_vocab;
        let d = compare(&half, &exact, v);
        let (clear, kept) = argmax_kept(&exact, &half, v, 0.05);
        eprintln!(
            "{:>10} f16 cache: argmax {:.1}% overall, {kept}/{clear} where the lead > 0.05; \
             max|Δ| vs f32 cache {:.2e} (max|logit| {:.3})",
            g.name,
            100.0 * d.argmax_agree,
            d.max_abs,
            d.max_logit
        );
        assert!(d.max_abs > 0.0, "{}: the f16 rounding shows", g.name);
        assert!(d.max_abs < 0.05 * d.max_logit, "{}: {}", g.name, d.max_abs);
        assert!(
            2 * clear >= g.tokens.len(),
            "{}: {clear} clear rows",
            g.name
        );
        assert_eq!(kept, clear, "{}: argmax lost with a lead > 0.05", g.name);
    }
}

/// On SmolLM2 the f16 cache keeps the f32 cache's argmax at 91.9% of the 210 positions, where
/// llama.cpp's own f16 cache keeps 95.2% of its f32 cache's (scripts/reference/kv_spread.py;
/// llama.cpp also rounds queries and attention weights to f16, fedtune does not).
#[test]
fn smollm2_f16_cache_keeps_the_argmax() {
    use fedtune_llm::llama::KvType;
    let Some(path) = smollm2_path() else { return };
    let tokens = u32s(&read_json(&fixtures("llama/smollm2.json"))["tokens"]);
    let model = LlamaModel::open(&path).unwrap();
    let mut c32 = model.new_cache(None);
    let mut c16 = model.new_cache_of(None, KvType::F16);
    let exact = model.forward(&mut c32, &tokens, Logits::All).unwrap();
    let half = model.forward(&mut c16, &tokens, Logits::All).unwrap();
    let d = compare(&half, &exact, model.cfg.n_vocab);
    let (clear, kept) = argmax_kept(&exact, &half, model.cfg.n_vocab, 0.5);
    eprintln!(
        "SmolLM2 f16 cache: argmax {:.1}% of {} positions, {kept}/{clear} where the lead > 0.5, \
         max|Δ| {:.3} (max|logit| {:.1})",
        100.0 * d.argmax_agree,
        tokens.len(),
        d.max_abs,
        d.max_logit
    );
    assert!(d.argmax_agree >= 0.9, "argmax {}", d.argmax_agree);
    assert!(
        clear - kept <= 4,
        "argmax lost with a lead > 0.5: {kept}/{clear}"
    );
    assert!(d.max_abs < 0.1 * d.max_logit, "max|Δ| {}", d.max_abs);
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

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(path) = smollm2_path() else { return };
    let fixture = read_json(&fixtures("llama/smollm2.json"));
    let tokens = u32s(&fixture["tokens"]);
    let model = LlamaModel::open(&path).unwrap();
    let mut cache = model.new_cache(None);
    let logits = model.forward(&mut cache, &tokens, Logits::All).unwrap();
    let positions = fixture["positions"].as_array().unwrap();
    let (rate, mean_top, worst_rel) = compare_top8(&logits, positions, model.cfg.n_vocab);
    eprintln!(
        "SmolLM2 Q4_1: argmax agreement {:.1}% over {} positions, mean|Δ| of the top-8 logits {:.4}, worst top-1 |Δ|/max|logit| {:.4}",
        100.0 * rate,
        positions.len(),
        mean_top,
        worst_rel
    );
    // llama.cpp disagrees with itself on ~5% of these positions between its batched and
    // single-token paths (this deep model amplifies last-bit differences through the 8-bit
    // activation rounding), so this holds only because the decoder follows the float
    // operation order of llama.cpp's batched CPU path (see llama/ggml_math.rs).
    if exact_kernels() {
        assert_eq!(mean_top, 0.0, "top-8 logits differ from llama.cpp's");
        assert_eq!(rate, 1.0, "argmax agreement {rate}");
    } else {
        assert!(rate >= 0.9, "argmax agreement {rate}");
    }
}

#[test]
fn smollm2_generates_sensibly_past_a_sliding_window() {
    let Some(path) = smollm2_path() else { return };
    let model = LlamaModel::open(&path).unwrap();
    let tok = fedtune_llm::tokenizer::Tokenizer::from_gguf(model.file()).unwrap();
    let prompt = tok
        .encode("<|im_start|>user\nTell me a long story about a fox and a crow.<|im_end|>\n<|im_start|>assistant\n", true, true)
        .unwrap();
    let window = 48;
    let mut cache = model.new_cache(Some(window));
    let mut sampler = fedtune_llm::llama::Sampler::new(fedtune_llm::llama::SamplerConfig {
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
    // A window that lost its sinks or its recent positions falls into loops that a full model
    // may still find likely; a loop repeats trigrams.
    let trigrams: std::collections::HashSet<&[u32]> = generated.windows(3).collect();
    let distinct = trigrams.len() as f64 / (generated.len() - 2) as f64;
    eprintln!("distinct trigrams {:.1}%", 100.0 * distinct);
    assert!(
        distinct >= 0.9,
        "repetitive: {:.1}% distinct trigrams",
        100.0 * distinct
    );
    assert!(ppl < 8.0, "perplexity {ppl}");
    assert!(wordy as f64 >= 0.95 * text.chars().count() as f64, "{text}");
}
