//! `fedtune bench strategies`: what one round of each aggregation rule costs the server on
//! LoRA adapter updates — K updates folded (staged on disk for the rules that need each one),
//! combined and applied — timed side by side, each rule against FedAvg in the same run.

use std::path::Path;
use std::time::Instant;

use fedtune_proto::{Bundle, Tensor};
use fedtune_server::strategy::{Params, StrategyError, build};

/// A q,k,v,o LoRA adapter's shape (SmolLM2-135M's by default).
#[derive(Clone, Copy, Debug)]
pub struct AdapterShape {
    pub layers: usize,
    /// Hidden size: q and o are dim × dim.
    pub dim: usize,
    /// Key/value width: k and v map dim to kv_dim.
    pub kv_dim: usize,
    pub rank: usize,
}

impl AdapterShape {
    /// SmolLM2-135M at rank 8: 921,600 values.
    pub const SMOLLM2: Self = AdapterShape {
        layers: 30,
        dim: 576,
        kv_dim: 192,
        rank: 8,
    };

    /// An adapter of this shape, tensors named as devices send them, values small and
    /// pseudo-random from `seed`.
    pub fn bundle(&self, seed: u64) -> Bundle {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        };
        let r = self.rank;
        let mut tensors = Vec::new();
        for layer in 0..self.layers {
            for (proj, out) in [
                ("attn_q", self.dim),
                ("attn_k", self.kv_dim),
                ("attn_v", self.kv_dim),
                ("attn_output", self.dim),
            ] {
                let name = format!("blk.{layer}.{proj}.weight");
                let a: Vec<f32> = (0..r * self.dim).map(|_| next()).collect();
                let b: Vec<f32> = (0..out * r).map(|_| next()).collect();
                tensors.push(Tensor::from_f32_vec(
                    format!("{name}.lora_a"),
                    vec![r, self.dim],
                    a,
                ));
                tensors.push(Tensor::from_f32_vec(
                    format!("{name}.lora_b"),
                    vec![out, r],
                    b,
                ));
            }
        }
        let tensors = tensors
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .expect("shapes match the values");
        Bundle::new(tensors).expect("distinct names")
    }
}

/// The rules timed, with the settings each runs under (the robust ones guard against one
/// attacker).
pub const RULES: [(&str, &[&str]); 8] = [
    ("fedavg", &[]),
    ("fedadam", &[]),
    ("fedmedian", &[]),
    ("fedtrimmedavg", &[]),
    ("krum", &["num_malicious_clients=1"]),
    (
        "multikrum",
        &["num_malicious_clients=1", "num_clients_to_keep=5"],
    ),
    ("bulyan", &["num_malicious_clients=1"]),
    ("flexlora", &[]),
];

/// Seconds for one round of rule `name` (with `params`) over `updates`: a fresh aggregator,
/// every update folded, the aggregate combined and applied to `global`. Staged rules write
/// their updates under `staging`.
pub fn round_seconds(
    name: &str,
    params: &[&str],
    global: &Bundle,
    updates: &[Bundle],
    staging: &Path,
) -> Result<f64, StrategyError> {
    let mut strategy = build(name, &Params::parse(params)?)?;
    strategy.stage_in(staging);
    let start = Instant::now();
    let mut aggregator = strategy.aggregator(global);
    for (i, u) in updates.iter().enumerate() {
        aggregator.fold(u, 10.0 + i as f64)?;
    }
    let aggregate = aggregator.finish()?;
    let next = strategy.apply(global, aggregate)?;
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(next);
    Ok(seconds)
}
