//! The training backward against central finite differences of the training forward, and the
//! training forward against the inference forward, on tiny random models (dim 32, 4 query /
//! 2 kv heads of 8, FFN 64, 2 layers, vocab 64) and a batch of two sequences of different
//! lengths (7 and 12 tokens).
//!
//! Tolerances. The forward is f32, so the loss (≈ ln 64 ≈ 4.2, summed in f64 from f32 logits)
//! carries rounding noise δ ≈ 2e-8 (differences with a step of 1e-3 scatter by up to 2e-5
//! around the analytic values). A central difference with step h is off by about
//! h²/6·|f‴| + δ/h. With h = 1e-2 the noise term is ≈ 2e-6 and the truncation term stays
//! below 1% of the gradient on these parameters (a rank-2 adapter of scale 2 with B ~ ±0.2);
//! measured on this suite, h = 3e-3 and 1e-3 do worse (noise), so does 3e-2 (truncation), and
//! so does Richardson extrapolation (it amplifies the noise). The gradients checked range from
//! 1e-6 to 1e-1, so each coordinate's error is
//! `|analytic − numeric| / (max(|analytic|, |numeric|) + 3e-4)`: relative above 3e-4, and in
//! units of 3e-4 ≈ 100·δ/h below, where noise dominates. The largest error seen is ≈ 1.1e-2
//! ([`TOL`] = 5e-2); a wrong formula shows as errors of order 1, as the last check of
//! `lora_gradients_match_finite_differences` demonstrates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use fedtune_llm::backprop::{
    AdamW, BaseView, Grads, Optimizer, Params, Schedule, Sequence, TrainError, TrainOptions, loss,
    loss_and_grads, train_step, train_step_with,
};
use fedtune_llm::gguf::GgufFile;
use fedtune_llm::llama::random::{RandomShape, SplitMix64, random_model};
use fedtune_llm::llama::{LlamaModel, Logits, Proj, RopeOrder, nll};
use fedtune_llm::lora::{LoraAdapter, LoraConfig};
use fedtune_llm::quant::GgmlType;

/// Central-difference step.
const EPS: f32 = 1e-2;
/// Gradients below this are compared in absolute terms (see the module comment).
const FLOOR: f64 = 3e-4;
/// The largest error accepted.
const TOL: f64 = 5e-2;
/// Coordinates checked per tensor.
const PER_TENSOR: usize = 20;

fn tiny(tied: bool, order: RopeOrder, ty: GgmlType) -> LlamaModel {
    let shape = RandomShape {
        dim: 32,
        heads: 4,
        kv_heads: 2,
        ffn: 64,
        layers: 2,
        vocab: 64,
        tied,
        gemma3: None,
    };
    let (writer, _) = random_model(&shape, ty, 42, 0).unwrap();
    let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
    let mut model = LlamaModel::from_file(Arc::new(file)).unwrap();
    model.cfg.rope_order = order;
    model
}

/// Two sequences (7 and 12 tokens) and a loss mask for each: a 3-token prompt not scored, and
/// one more masked token further on.
fn batch_data() -> (Vec<Vec<u32>>, Vec<Vec<bool>>) {
    let mut rng = SplitMix64::new(9);
    let seqs: Vec<Vec<u32>> = [7usize, 12]
        .iter()
        .map(|&n| (0..n).map(|_| (rng.next_u64() % 64) as u32).collect())
        .collect();
    let masks = seqs
        .iter()
        .map(|s| (0..s.len()).map(|i| i >= 3 && i != 5).collect())
        .collect();
    (seqs, masks)
}

/// [`batch_data`] as training examples.
fn batch_examples() -> Vec<fedtune_llm::backprop::Example> {
    let (seqs, masks) = batch_data();
    seqs.into_iter()
        .zip(masks)
        .map(|(tokens, mask)| fedtune_llm::backprop::Example {
            tokens,
            mask: Some(mask),
        })
        .collect()
}

fn batch<'a>(seqs: &'a [Vec<u32>], masks: Option<&'a [Vec<bool>]>) -> Vec<Sequence<'a>> {
    match masks {
        None => seqs.iter().map(|s| Sequence::new(s)).collect(),
        Some(m) => seqs
            .iter()
            .zip(m)
            .map(|(s, m)| Sequence::masked(s, m))
            .collect(),
    }
}

/// A rank-2 adapter (scale 2) on `targets` with B random (±0.2) instead of PEFT's zero, so
/// that the gradients of A are not zero.
fn adapter(model: &LlamaModel, targets: &[Proj], dropout: f32) -> LoraAdapter {
    let cfg = LoraConfig {
        dropout,
        seed: 5,
        alpha: 4.0,
        ..LoraConfig::new(2, targets)
    };
    let mut lora = LoraAdapter::new(cfg, &model.cfg).unwrap();
    let mut rng = SplitMix64::new(11);
    for m in &mut lora.modules {
        m.b = rng.uniform(m.b.len(), 0.2);
    }
    lora
}

/// `count` distinct coordinates of a tensor of `len` values.
fn coords(rng: &mut SplitMix64, len: usize, count: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    while out.len() < count.min(len) {
        let i = (rng.next_u64() % len as u64) as usize;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The worst error over the coordinates checked.
#[derive(Debug, Default)]
struct Errors {
    max: f64,
    worst: String,
    checked: usize,
}

impl Errors {
    fn record(&mut self, what: String, analytic: f64, numeric: f64) {
        let err = (analytic - numeric).abs() / (analytic.abs().max(numeric.abs()) + FLOOR);
        self.checked += 1;
        if err > self.max || self.checked == 1 {
            self.max = err;
            self.worst = format!("{what}: analytic {analytic:.6e}, numeric {numeric:.6e}");
        }
    }

    fn assert_ok(&self, case: &str) {
        println!(
            "{case}: {} coordinates, max error {:.2e} at {}",
            self.checked, self.max, self.worst
        );
        assert!(
            self.max < TOL,
            "{case}: error {:.2e} at {}",
            self.max,
            self.worst
        );
    }
}

/// Compares `analytic` with central differences at [`PER_TENSOR`] random coordinates;
/// `loss_at(c, v)` is the loss with coordinate `c` set to `v` (and must restore it).
fn compare(
    errs: &mut Errors,
    rng: &mut SplitMix64,
    name: &str,
    analytic: &[f32],
    values: &[f32],
    loss_at: &mut dyn FnMut(usize, f32) -> f64,
) {
    for c in coords(rng, analytic.len(), PER_TENSOR) {
        let x = values[c];
        let numeric =
            (loss_at(c, x + EPS) - loss_at(c, x - EPS)) / (f64::from(x + EPS) - f64::from(x - EPS));
        errs.record(format!("{name}[{c}]"), f64::from(analytic[c]), numeric);
    }
}

/// Checks the gradient of every A and B of `lora`.
fn check_lora(
    model: &LlamaModel,
    lora: &LoraAdapter,
    batch: &[Sequence],
    opts: &TrainOptions,
) -> Errors {
    let base = BaseView::of_model(model);
    let (_, grads) = loss_and_grads(&base, Some(lora), batch, opts).unwrap();
    check_grads(model, lora, &grads, batch, opts)
}

/// Checks `grads` against central differences of the loss of `model` with `lora`.
fn check_grads(
    model: &LlamaModel,
    lora: &LoraAdapter,
    grads: &Grads,
    batch: &[Sequence],
    opts: &TrainOptions,
) -> Errors {
    let base = BaseView::of_model(model);
    let mut probe = lora.clone();
    let mut rng = SplitMix64::new(13);
    let mut errs = Errors::default();
    for (i, g) in grads.lora.iter().enumerate() {
        for b in [false, true] {
            let (name, analytic, values) = match b {
                false => (format!("{}.lora_a", g.name()), &g.a, &lora.modules[i].a),
                true => (format!("{}.lora_b", g.name()), &g.b, &lora.modules[i].b),
            };
            compare(&mut errs, &mut rng, &name, analytic, values, &mut |c, v| {
                let m = &mut probe.modules[i];
                let old = std::mem::replace(if b { &mut m.b[c] } else { &mut m.a[c] }, v);
                let l = loss(&base, Some(&probe), batch, opts).unwrap().loss();
                let m = &mut probe.modules[i];
                *(if b { &mut m.b[c] } else { &mut m.a[c] }) = old;
                l
            });
        }
    }
    errs
}

#[test]
fn lora_gradients_match_finite_differences() {
    let (seqs, masks) = batch_data();
    for order in [RopeOrder::Normal, RopeOrder::NeoX] {
        let model = tiny(false, order, GgmlType::F32);
        let lora = adapter(&model, &Proj::ALL, 0.0);
        for masked in [false, true] {
            let b = batch(&seqs, masked.then_some(&masks[..]));
            check_lora(&model, &lora, &b, &TrainOptions::default()).assert_ok(&format!(
                "LoRA q,k,v,o,gate,up,down, {order:?} RoPE, masked {masked}"
            ));
        }
    }
    // The check is sharp: the gradients of the model with the other RoPE order fail it.
    let (normal, neox) = (
        tiny(false, RopeOrder::Normal, GgmlType::F32),
        tiny(false, RopeOrder::NeoX, GgmlType::F32),
    );
    let lora = adapter(&normal, &[Proj::Q, Proj::K], 0.0);
    let b = batch(&seqs, None);
    let opts = TrainOptions::default();
    let (_, wrong) = loss_and_grads(&BaseView::of_model(&normal), Some(&lora), &b, &opts).unwrap();
    let e = check_grads(&neox, &lora, &wrong, &b, &opts);
    println!(
        "Normal-order gradients against NeoX differences: max error {:.2e} at {}",
        e.max, e.worst
    );
    assert!(e.max > 0.5, "{:.2e}", e.max);
}

/// Dropout is a fixed mask given the step, so the loss stays differentiable; a quantized base
/// (Q4_0, dequantized row by row) works the same, and checkpointing changes nothing.
#[test]
fn lora_gradients_with_dropout_quantized_base_and_checkpointing() {
    let (seqs, masks) = batch_data();
    let b = batch(&seqs, Some(&masks));
    let opts = TrainOptions {
        step: 3,
        dropout: true,
        ..TrainOptions::default()
    };
    let model = tiny(true, RopeOrder::NeoX, GgmlType::F32);
    let lora = adapter(&model, &[Proj::Q, Proj::V, Proj::Up, Proj::Down], 0.2);
    check_lora(&model, &lora, &b, &opts).assert_ok("LoRA with dropout 0.2");
    // Dropout changes the loss (it is on), and is the same at the same step.
    let base = BaseView::of_model(&model);
    let eval = loss(&base, Some(&lora), &b, &TrainOptions::default())
        .unwrap()
        .loss();
    let train = loss(&base, Some(&lora), &b, &opts).unwrap().loss();
    assert_ne!(eval, train);
    assert_eq!(train, loss(&base, Some(&lora), &b, &opts).unwrap().loss());

    let (s1, g1) = loss_and_grads(&base, Some(&lora), &b, &opts).unwrap();
    let (s2, g2) = loss_and_grads(
        &base,
        Some(&lora),
        &b,
        &TrainOptions {
            checkpoint: true,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(
        (s1, g1),
        (s2, g2),
        "checkpointing recomputes the very same values"
    );

    let q4 = tiny(false, RopeOrder::Normal, GgmlType::Q4_0);
    let lora = adapter(&q4, &Proj::ALL, 0.0);
    check_lora(&q4, &lora, &b, &TrainOptions::default()).assert_ok("LoRA on a Q4_0 base");
}

/// Gradients of every kind of base weight (full-parameter mode) of f32 models, tied and not.
#[test]
fn full_parameter_gradients_match_finite_differences() {
    let (seqs, masks) = batch_data();
    for (tied, order) in [(true, RopeOrder::Normal), (false, RopeOrder::NeoX)] {
        let model = tiny(tied, order, GgmlType::F32);
        let cfg = model.cfg.clone();
        let params = Params::from_model(&model).unwrap();
        let b = batch(&seqs, Some(&masks));
        let opts = TrainOptions {
            base_grads: true,
            ..TrainOptions::default()
        };
        let (_, grads) = loss_and_grads(&params.view(&cfg), None, &b, &opts).unwrap();
        let grads = grads.base.unwrap();
        let names: Vec<String> = params.tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            grads
                .tensors()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        );
        assert_eq!(names.iter().any(|n| n == "output.weight"), !tied);
        let mut probe = params.clone();
        let mut rng = SplitMix64::new(17);
        let mut errs = Errors::default();
        // Every tensor of the model: embeddings, norms, the seven projections of both layers,
        // the output head when not tied.
        for (t, ((name, analytic), (_, values))) in grads
            .tensors()
            .into_iter()
            .zip(params.tensors())
            .enumerate()
        {
            compare(&mut errs, &mut rng, &name, analytic, values, &mut |c, v| {
                let old = std::mem::replace(&mut probe.tensors_mut()[t][c], v);
                let l = loss(&probe.view(&cfg), None, &b, &TrainOptions::default())
                    .unwrap()
                    .loss();
                probe.tensors_mut()[t][c] = old;
                l
            });
        }
        errs.assert_ok(&format!("full parameters, tied {tied}, {order:?} RoPE"));
    }
}

/// At LoRA's initialisation (B = 0) the training loss is the inference forward's
/// cross-entropy.
#[test]
fn init_loss_matches_inference_forward() {
    let (seqs, masks) = batch_data();
    // f32: both are f32 forwards with different summation orders (and ggml's expf in the
    // inference softmax and SiLU), so they agree to a few f32 ulps of the loss. Q8_0: the
    // inference forward also rounds activations to 8 bits before each product (ggml's
    // scheme), the training forward keeps them f32: they differ by about 3e-4 relative.
    for (ty, tol) in [(GgmlType::F32, 1e-5), (GgmlType::Q8_0, 2e-3)] {
        let model = tiny(false, RopeOrder::Normal, ty);
        let lora = LoraAdapter::new(LoraConfig::new(4, &Proj::ALL), &model.cfg).unwrap();
        for masked in [false, true] {
            let b = batch(&seqs, masked.then_some(&masks[..]));
            let stats = loss(
                &BaseView::of_model(&model),
                Some(&lora),
                &b,
                &TrainOptions::default(),
            )
            .unwrap();
            let (mut sum, mut count) = (0f64, 0usize);
            for (i, s) in seqs.iter().enumerate() {
                let mut cache = model.new_cache(None);
                let logits = model
                    .forward(&mut cache, &s[..s.len() - 1], Logits::All)
                    .unwrap();
                for (p, row) in logits.chunks_exact(model.cfg.n_vocab).enumerate() {
                    if !masked || masks[i][p + 1] {
                        sum += nll(row, s[p + 1] as usize);
                        count += 1;
                    }
                }
            }
            let want = sum / count as f64;
            println!(
                "{ty:?} masked {masked}: training {:.8} inference {want:.8}",
                stats.loss()
            );
            assert_eq!(stats.count, count);
            assert!(
                (stats.loss() - want).abs() < tol * want,
                "{ty:?}: {} vs {want}",
                stats.loss()
            );
        }
    }
}

/// Micro-batches sharing the whole batch's denominator sum to the whole batch's gradients.
#[test]
fn micro_batch_gradients_accumulate() {
    let (seqs, _) = batch_data();
    let model = tiny(false, RopeOrder::Normal, GgmlType::F32);
    let base = BaseView::of_model(&model);
    let lora = adapter(&model, &[Proj::Q, Proj::O, Proj::Down], 0.0);
    let whole = batch(&seqs, None);
    let (stats, want) =
        loss_and_grads(&base, Some(&lora), &whole, &TrainOptions::default()).unwrap();
    let opts = TrainOptions {
        denominator: Some(stats.count as f64),
        ..TrainOptions::default()
    };
    let mut acc: Option<Grads> = None;
    let mut sum = 0.0;
    for s in &whole {
        let (st, g) = loss_and_grads(&base, Some(&lora), std::slice::from_ref(s), &opts).unwrap();
        sum += st.sum;
        match acc.as_mut() {
            None => acc = Some(g),
            Some(a) => a.add(&g).unwrap(),
        }
    }
    assert!((sum - stats.sum).abs() < 1e-9 * stats.sum);
    let acc = acc.unwrap();
    for ((name, a), (_, b)) in acc.tensors().into_iter().zip(want.tensors()) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1e-3 + y.abs()),
                "{name}: {x} vs {y}"
            );
        }
    }
    // Mismatched gradient sets are refused.
    let other = loss_and_grads(
        &base,
        Some(&adapter(&model, &[Proj::K], 0.0)),
        &whole,
        &opts,
    )
    .unwrap()
    .1;
    assert!(acc.clone().add(&other).is_err());
}

/// A diverging step is an error naming the step, and the adapter keeps its last finite
/// values.
#[test]
fn non_finite_loss_is_an_error_naming_the_step() {
    let (seqs, _) = batch_data();
    let model = tiny(false, RopeOrder::Normal, GgmlType::F32);
    let base = BaseView::of_model(&model);
    let b = batch(&seqs, None);

    // A sane rate lowers the loss.
    let mut lora = LoraAdapter::new(LoraConfig::new(4, &Proj::ALL), &model.cfg).unwrap();
    let first = train_step(&base, &mut lora, &b, &TrainOptions::default(), 0.5)
        .unwrap()
        .loss();
    for step in 1..20 {
        train_step(
            &base,
            &mut lora,
            &b,
            &TrainOptions {
                step,
                ..TrainOptions::default()
            },
            0.5,
        )
        .unwrap();
    }
    let last = loss(&base, Some(&lora), &b, &TrainOptions::default())
        .unwrap()
        .loss();
    println!("20 SGD steps: loss {first:.4} → {last:.4}");
    assert!(last < first - 0.1, "{first} → {last}");

    // An absurd rate: the first step blows B up, the second step's loss is not finite.
    let mut lora = LoraAdapter::new(LoraConfig::new(4, &Proj::ALL), &model.cfg).unwrap();
    let mut err = None;
    for step in 0..5 {
        let before = lora.clone();
        match train_step(
            &base,
            &mut lora,
            &b,
            &TrainOptions {
                step,
                ..TrainOptions::default()
            },
            1e30,
        ) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(lora, before, "a failed step updates nothing");
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("the loss diverges");
    assert!(
        matches!(err, TrainError::NonFinite { step: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("step 1"), "{err}");
    assert!(
        lora.tensors()
            .iter()
            .all(|(_, t)| t.iter().all(|v| v.is_finite()))
    );

    // A NaN already in the adapter: the first step says so.
    lora.modules[3].b[0] = f32::NAN;
    let err = train_step(
        &base,
        &mut lora,
        &b,
        &TrainOptions {
            step: 7,
            ..TrainOptions::default()
        },
        0.1,
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::NonFinite { step: 7, .. }),
        "{err}"
    );
}

#[test]
fn bad_batches_are_named() {
    let model = tiny(false, RopeOrder::Normal, GgmlType::F32);
    let base = BaseView::of_model(&model);
    let opts = TrainOptions::default();
    let err = |b: &[Sequence]| loss(&base, None, b, &opts).unwrap_err().to_string();
    assert!(
        err(&[Sequence::new(&[1, 2]), Sequence::new(&[3, 64])])
            .contains("sequence 1, position 1: token 64")
    );
    assert!(
        err(&[Sequence::masked(&[1, 2, 3], &[true, true])])
            .contains("3 tokens but a loss mask of 2")
    );
    assert!(
        err(&[
            Sequence::new(&[1]),
            Sequence::masked(&[1, 2], &[true, false])
        ])
        .contains("no target tokens")
    );
    let long = vec![1u32; model.cfg.context_len + 1];
    assert!(err(&[Sequence::new(&long)]).contains("context length"));
    let mut cfg = model.cfg.clone();
    cfg.ffn_dim = 32;
    let lora = LoraAdapter::new(LoraConfig::new(2, &[Proj::Up]), &cfg).unwrap();
    let e = loss(&base, Some(&lora), &[Sequence::new(&[1, 2])], &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("blk.0.Up") && e.contains("[64, 2]"), "{e}");
}

/// AdamW with a warm-up schedule and clipping through `train_step_with` trains an adapter
/// (with dropout); AdamW on every weight of an f32 model (the full-parameter path) too.
#[test]
fn optimisers_lower_the_loss() {
    let (seqs, masks) = batch_data();
    let model = tiny(false, RopeOrder::NeoX, GgmlType::F32);
    let base = BaseView::of_model(&model);
    let b = batch(&seqs, Some(&masks));
    let eval = TrainOptions::default();

    let mut lora = LoraAdapter::new(
        LoraConfig {
            dropout: 0.1,
            ..LoraConfig::new(4, &Proj::ALL)
        },
        &model.cfg,
    )
    .unwrap();
    let mut opt = AdamW::default();
    let schedule = Schedule::Linear {
        warmup: 2,
        total: 20,
    };
    let first = loss(&base, Some(&lora), &b, &eval).unwrap().loss();
    for step in 0..20 {
        let opts = TrainOptions {
            step,
            dropout: true,
            ..eval
        };
        let s = train_step_with(
            &base,
            &mut lora,
            &b,
            &opts,
            &mut opt,
            schedule.lr(1e-2, step),
            Some(1.0),
        )
        .unwrap();
        assert!(s.grad_norm.is_finite() && s.loss.loss().is_finite());
    }
    let last = loss(&base, Some(&lora), &b, &eval).unwrap().loss();
    println!("LoRA, 20 AdamW steps: loss {first:.4} → {last:.4}");
    assert!(last < first - 0.5, "{first} → {last}");

    let cfg = model.cfg.clone();
    let mut params = Params::from_model(&model).unwrap();
    let mut opt = AdamW::default();
    let first = loss(&params.view(&cfg), None, &b, &eval).unwrap().loss();
    for step in 0..10 {
        let opts = TrainOptions {
            step,
            base_grads: true,
            ..eval
        };
        let (_, grads) = loss_and_grads(&params.view(&cfg), None, &b, &opts).unwrap();
        opt.step(&mut params.tensors_mut(), &grads.values(), 1e-2)
            .unwrap();
    }
    let last = loss(&params.view(&cfg), None, &b, &eval).unwrap().loss();
    println!("full parameters, 10 AdamW steps: loss {first:.4} → {last:.4}");
    assert!(last < first - 0.5, "{first} → {last}");
}

/// `fit` trains with accumulation and FedProx, reproducibly, and stops at the step whose
/// loss is not finite, naming it, with the adapter of the last good step.
#[test]
fn fit_trains_reproducibly_and_names_the_diverging_step() {
    use fedtune_llm::backprop::{FitConfig, evaluate, fit};
    let model = tiny(true, RopeOrder::Normal, GgmlType::Q8_0);
    let base = BaseView::of_model(&model);
    let examples = batch_examples();
    let fresh = LoraAdapter::new(LoraConfig::new(2, &Proj::ALL), &model.cfg).unwrap();
    let cfg = FitConfig {
        steps: 30,
        batch_size: 2,
        grad_accum: 2,
        lr: 0.02,
        prox_mu: 0.01,
        ..FitConfig::default()
    };
    let run = || {
        let mut a = fresh.clone();
        let mut steps = 0;
        let s = fit(&base, &mut a, &examples, &cfg, |_| steps += 1).unwrap();
        assert_eq!((s.steps, steps), (30, 30));
        a
    };
    let trained = run();
    assert_eq!(trained, run(), "same seed, same adapter");
    let (before, _) = evaluate(&base, Some(&fresh), &examples, 4).unwrap();
    let (after, _) = evaluate(&base, Some(&trained), &examples, 4).unwrap();
    assert!(after < 0.8 * before, "{before} -> {after}");

    // A learning rate that blows up: the error names the step; the adapter stays finite.
    let mut a = fresh.clone();
    let wild = FitConfig {
        lr: 1e30,
        max_grad_norm: None,
        optimizer: fedtune_llm::backprop::OptimizerKind::Sgd { momentum: 0.0 },
        ..cfg.clone()
    };
    let e = fit(&base, &mut a, &examples, &wild, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("step ") && e.contains("not finite"), "{e}");
    assert!(
        a.tensors()
            .iter()
            .all(|(_, v)| v.iter().all(|x| x.is_finite())),
        "{e}"
    );
}

/// FFA-LoRA: with `freeze_lora_a`, every A leaves `fit` bit for bit as it came in (even with
/// AdamW's weight decay, which would shrink a parameter whose gradient is zero), every B
/// trains, and the loss still falls.
#[test]
fn frozen_a_stays_put_while_b_trains() {
    use fedtune_llm::backprop::{FitConfig, OptimizerKind, evaluate, fit};
    let model = tiny(true, RopeOrder::Normal, GgmlType::Q8_0);
    let base = BaseView::of_model(&model);
    let examples = batch_examples();
    let fresh = LoraAdapter::new(LoraConfig::new(2, &Proj::ALL), &model.cfg).unwrap();
    let cfg = FitConfig {
        steps: 30,
        batch_size: 2,
        lr: 0.02,
        optimizer: OptimizerKind::AdamW { weight_decay: 0.1 },
        freeze_lora_a: true,
        ..FitConfig::default()
    };
    let mut a = fresh.clone();
    fit(&base, &mut a, &examples, &cfg, |_| {}).unwrap();
    for (m, m0) in a.modules.iter().zip(&fresh.modules) {
        assert_eq!(m.a, m0.a, "{}: A moved", m.name());
        assert!(
            m.b.iter().any(|&x| x != 0.0),
            "{}: B did not train",
            m.name()
        );
    }
    let (before, _) = evaluate(&base, Some(&fresh), &examples, 4).unwrap();
    let (after, _) = evaluate(&base, Some(&a), &examples, 4).unwrap();
    assert!(after < 0.9 * before, "{before} -> {after}");
    // Without the freeze, the same run moves A.
    let mut full = fresh.clone();
    let unfrozen = FitConfig {
        freeze_lora_a: false,
        ..cfg
    };
    fit(&base, &mut full, &examples, &unfrozen, |_| {}).unwrap();
    assert_ne!(full.modules[0].a, fresh.modules[0].a);
}
