//! Federated LoRA over real loopback gRPC: devices train adapters on a tiny quantized model
//! through the real client runtime, and the global adapter's loss on their data falls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use fedtune::sim::{self, FaultRates, SimConfig, TransportKind};
use fedtune_client::trainer::{LoraTrainer, adapter_bundle};
use fedtune_llm::backprop::Example;
use fedtune_llm::gguf::GgufFile;
use fedtune_llm::llama::random::{RandomShape, SplitMix64, random_model};
use fedtune_llm::llama::{LlamaModel, Proj};
use fedtune_llm::lora::{LoraAdapter, LoraConfig};
use fedtune_proto::Compression;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_lora_lowers_the_global_adapters_loss() {
    let shape = RandomShape {
        dim: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 96,
        layers: 2,
        vocab: VOCAB,
        tied: true,
    };
    let (writer, _) = random_model(&shape, fedtune_llm::quant::GgmlType::Q8_0, 3, 0).unwrap();
    let file = GgufFile::from_bytes(writer.to_bytes().unwrap()).unwrap();
    let model = Arc::new(LlamaModel::from_file(Arc::new(file)).unwrap());
    let lora = LoraConfig {
        seed: 7,
        ..LoraConfig::new(4, &Proj::ALL)
    };
    let template = LoraAdapter::new(lora, &model.cfg).unwrap();
    let initial = adapter_bundle(&template);

    let (clients, rounds) = (4, 5);
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::quick_config(rounds, clients, clients);
    server.training.learning_rate = 0.01;
    server.training.local_steps = 8;
    server.training.batch_size = 4;
    let cfg = SimConfig {
        server,
        clients,
        transport: TransportKind::Grpc,
        threads: 2,
        concurrency: 4,
        faults: FaultRates::default(),
        connections: 0,
        state_dir: dir.path().to_path_buf(),
        compression: Compression::None,
    };
    let trainer = |i: usize| {
        LoraTrainer::new(
            model.clone(),
            template.clone(),
            client_examples(i),
            sim::trainer_seed(1, i),
        )
        .unwrap()
    };
    let report = sim::run(&cfg, initial.clone(), Box::new(FedAvg), trainer)
        .await
        .unwrap();
    assert_eq!(report.version, rounds);

    // The global adapter's loss on every client's data, before and after the federation.
    let loss = |bundle| {
        (0..clients)
            .map(|i| trainer(i).loss(bundle).unwrap())
            .sum::<f64>()
            / clients as f64
    };
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
