//! A round of any strategy on arbitrary input: settings (`KEY=VALUE` text), restored state
//! (tensors of any names, shapes and values) and finite updates of any size. Every outcome is
//! a result, never a panic, and a model that comes out is finite.
#![no_main]

use fedtune_proto::{Bundle, Tensor};
use fedtune_server::strategy::{NAMES, Params, build};
use libfuzzer_sys::fuzz_target;

/// f32 values from bytes, made finite (the server refuses non-finite updates before any
/// strategy sees them).
fn values(bytes: &[u8], n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let c = [0, 1, 2, 3].map(|k| bytes.get(i * 4 + k).copied().unwrap_or(0));
            let v = f32::from_le_bytes(c);
            if v.is_finite() { v } else { 0.0 }
        })
        .collect()
}

fn model(bytes: &[u8]) -> Bundle {
    Bundle::new(vec![
        Tensor::from_f32("x.lora_a", vec![2, 3], &values(bytes, 6)).unwrap(),
        Tensor::from_f32("x.lora_b", vec![4, 2], &values(bytes.get(24..).unwrap_or(&[]), 8)).unwrap(),
        Tensor::from_f32("bias", vec![1], &values(bytes.get(56..).unwrap_or(&[]), 1)).unwrap(),
    ])
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let name = NAMES[usize::from(head) % NAMES.len()];
    let (text, rest) = match rest.iter().position(|&b| b == 0) {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &[][..]),
    };
    let items: Vec<&str> = std::str::from_utf8(text).unwrap_or("").split_whitespace().collect();
    let Ok(params) = Params::parse(&items) else { return };
    let Ok(mut strategy) = build(name, &params) else { return };
    let dir = std::env::temp_dir();
    strategy.stage_in(&dir);
    let global = model(rest);
    // State: a round counter and a vector of any length, from the input.
    if rest.len() > 62 {
        let n = usize::from(rest[60] % 9);
        let state = Bundle::new(vec![
            Tensor::from_u32_vec("rounds", vec![1], vec![u32::from(rest[61])]).unwrap(),
            Tensor::from_f32("m.x.lora_a", vec![n], &values(&rest[62..], n)).unwrap(),
        ])
        .unwrap();
        let _ = strategy.restore(state);
    }
    let k = 1 + rest.len() % 9;
    let mut aggregator = strategy.aggregator(&global);
    for i in 0..k {
        let update = model(rest.get(i * 7..).unwrap_or(&[]));
        let _ = aggregator.fold(&update, 1.0 + i as f64);
    }
    let Ok(aggregate) = aggregator.finish() else { return };
    if let Ok(next) = strategy.apply(&global, aggregate) {
        assert!(next.tensors().iter().all(|t| t.to_f32().iter().all(|v| v.is_finite())));
    }
});
