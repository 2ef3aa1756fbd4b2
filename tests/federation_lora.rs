//! Federated LoRA over real loopback gRPC: devices train adapters on a tiny quantized model
//! through the real client runtime, and the global adapter's loss on their data falls — with
//! full LoRA, with FFA-LoRA (B alone) and with devices of different ranks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use fedtune::sim::{self, FaultRates, SimConfig, TransportKind};
use fedtune_client::trainer::{LoraTrainer, adapter_bundle, adapter_from_bundle, b_bundle};
use fedtune_llm::backprop::Example;
use fedtune_llm::gguf::GgufFile;
use fedtune_llm::llama::random::{RandomShape, SplitMix64, random_model};
use fedtune_llm::llama::{LlamaModel, Proj};
use fedtune_llm::lora::{LoraAdapter, LoraConfig};
use fedtune_proto::{Bundle, Compression};
use fedtune_server::strategy::FedAvg;

const VOCAB: usize = 64;

/// Client `i`'s sequences: counting up in steps of 3 (mod the vocabulary) from random
/// starts, a rule every client shares and the random base model does not know.
fn client_examples(i: usize) -> Vec<Example> {
    let mut rng = SplitMix64::new(100 + i as u64);
    (0..12)
        .map(|_| {
            let start = rng.next_u64() as usize % VOCAB;
            Example {
                tokens: (0..24).map(|k| ((start + 3 * k) % VOCAB) as u32).collect(),
                mask: None,
            }
        })
        .collect()
}

fn tiny_model() -> Arc<LlamaModel> {
    let shape = RandomShape {
        dim: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 96,
        layers: 2,
        vocab: VOCAB,
        tied: true,
        gemma3: None,
    };
    let (writer, _) = random_model(&shape, fedtune_llm::quant::GgmlType::Q8_0, 3, 0).unwrap();
    let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
    Arc::new(LlamaModel::from_file(Arc::new(file)).unwrap())
}

fn template(model: &LlamaModel, rank: usize) -> LoraAdapter {
    let lora = LoraConfig {
        seed: 7,
        // One scale alpha/rank = 2 at every rank (heterogeneous ranks rely on it).
        alpha: 2.0 * rank as f32,
        ..LoraConfig::new(rank, &Proj::ALL)
    };
    LoraAdapter::new(lora, &model.cfg).unwrap()
}

/// A federation of `clients` devices over real gRPC for `rounds` rounds.
fn sim_config(dir: &std::path::Path, rounds: u64, clients: usize) -> SimConfig {
    let mut server = common::quick_config(rounds, clients, clients);
    server.training.learning_rate = 0.01;
    server.training.local_steps = 8;
    server.training.batch_size = 4;
    SimConfig {
        server,
        clients,
        transport: TransportKind::Grpc,
        threads: 2,
        concurrency: 4,
        faults: FaultRates::default(),
        connections: 0,
        state_dir: dir.to_path_buf(),
        compression: Compression::None,
    }
}

/// Device `i`'s trainer of adapters shaped like `t`.
fn device(model: &Arc<LlamaModel>, t: &LoraAdapter, i: usize) -> LoraTrainer {
    LoraTrainer::new(
        model.clone(),
        t.clone(),
        client_examples(i),
        sim::trainer_seed(1, i),
    )
    .unwrap()
}

/// The mean loss over `clients` devices' data of `bundle` read as an adapter like `t`.
fn mean_loss(model: &Arc<LlamaModel>, t: &LoraAdapter, bundle: &Bundle, clients: usize) -> f64 {
    (0..clients)
        .map(|i| device(model, t, i).loss(bundle).unwrap())
        .sum::<f64>()
        / clients as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_lora_lowers_the_global_adapters_loss() {
    let model = tiny_model();
    let template = template(&model, 4);
    let initial = adapter_bundle(&template);
    let (clients, rounds) = (4, 5);
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), rounds, clients);
    let trainer = |i: usize| device(&model, &template, i);
    let report = sim::run(&cfg, initial.clone(), Box::new(FedAvg), trainer)
        .await
        .unwrap();
    assert_eq!(report.version, rounds);

    // The global adapter's loss on every client's data, before and after the federation.
    let loss = |bundle| mean_loss(&model, &template, bundle, clients);
    let (before, after) = (loss(&initial), loss(&report.model));
    // And round by round, as the devices measured the global adapter they received.
    let curve = common::round_curve(&report.coordinator, "train_loss_before", rounds);
    eprintln!("global adapter loss {before:.4} -> {after:.4}; per round {curve:.4?}");
    assert!(
        after < 0.7 * before,
        "loss should fall: {before} -> {after}"
    );
    assert!(
        curve.windows(2).all(|w| w[1] < w[0]),
        "per-round losses should fall: {curve:?}"
    );
}

/// FFA-LoRA: the global holds B alone, devices upload B alone, and the shared A never moves;
/// the loss still falls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffa_lora_trains_and_sends_b_alone() {
    let model = tiny_model();
    let template = template(&model, 4);
    let initial = b_bundle(&template);
    let (clients, rounds) = (4, 5);
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), rounds, clients);
    let trainer = |i: usize| device(&model, &template, i).with_frozen_a(true);
    let report = sim::run(&cfg, initial.clone(), Box::new(FedAvg), trainer)
        .await
        .unwrap();
    assert_eq!(report.version, rounds);
    assert_eq!(report.model.manifest(), initial.manifest());
    assert!(
        report
            .model
            .tensors()
            .iter()
            .all(|t| t.name().ends_with(".lora_b"))
    );
    // What each device uploaded: B alone, as many bytes as the B tensors hold.
    let up = report
        .coordinator
        .with_store(|s| s.metric_total(1, "bytes_up").unwrap().1);
    assert_eq!(up as usize, clients * initial.byte_len());
    let merged = adapter_from_bundle(&report.model, &template).unwrap();
    for (m, m0) in merged.modules.iter().zip(&template.modules) {
        assert_eq!(m.a, m0.a);
    }
    let loss = |bundle| mean_loss(&model, &template, bundle, clients);
    let (before, after) = (loss(&initial), loss(&report.model));
    eprintln!("FFA-LoRA global adapter loss {before:.4} -> {after:.4}");
    assert!(
        after < 0.8 * before,
        "loss should fall: {before} -> {after}"
    );
}

/// Heterogeneous ranks end to end: devices of rank 2 and 4 train one rank-4 global adapter
/// through the real client runtime (each downloads it at its own rank), and its loss falls
/// on every device's data, measured at rank 4 and at rank 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_different_ranks_train_one_adapter() {
    let model = tiny_model();
    let (high, low) = (template(&model, 4), template(&model, 2));
    let initial = adapter_bundle(&high);
    let (clients, rounds) = (4, 5);
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), rounds, clients);
    let trainer = |i: usize| device(&model, if i.is_multiple_of(2) { &low } else { &high }, i);
    let report = sim::run(&cfg, initial.clone(), Box::new(FedAvg), trainer)
        .await
        .unwrap();
    assert_eq!(report.version, rounds);
    assert_eq!(report.model.manifest(), initial.manifest());
    let loss = |t: &LoraAdapter, bundle: &Bundle| mean_loss(&model, t, bundle, clients);
    let (before, after) = (loss(&high, &initial), loss(&high, &report.model));
    eprintln!("mixed-rank global adapter loss {before:.4} -> {after:.4}");
    assert!(
        after < 0.8 * before,
        "loss should fall: {before} -> {after}"
    );
    // The rank-2 devices' view of it (its first two components) has learnt too.
    let truncated = fedtune_server::strategy::hetlora::truncate(&report.model, 2).unwrap();
    let before = loss(
        &low,
        &fedtune_server::strategy::hetlora::truncate(&initial, 2).unwrap(),
    );
    let after = loss(&low, &truncated);
    eprintln!("its rank-2 view: {before:.4} -> {after:.4}");
    assert!(
        after < 0.8 * before,
        "rank-2 loss should fall: {before} -> {after}"
    );
}
