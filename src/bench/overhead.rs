//! `fedtune bench overhead`: the framework's own cost on a fixed workload that Flower's
//! simulation can run too (see scripts/reference/flower_overhead.py): one tensor of P f32
//! values starting at x_i = sin(i); every client takes part in every round and returns the
//! global model + 0.001 with 10 examples; FedAvg.

use std::time::Duration;

use fedtune_proto::Compression;
use fedtune_server::{ServerConfig, strategy::FedAvg};

use crate::models::{ShiftTrainer, mean, sin_model};
use crate::sim::{self, FaultRates, SimConfig, TransportKind};

/// Parameters of one overhead run.
#[derive(Clone, Debug)]
pub struct Overhead {
    pub clients: usize,
    pub rounds: u64,
    pub params: usize,
    pub transport: TransportKind,
    pub seed: u64,
    pub threads: usize,
    pub concurrency: usize,
    pub connections: usize,
    /// Aggregate securely.
    pub secagg: Option<fedtune_server::SecAggSettings>,
    /// Differential privacy (the updates' mean then moves by noise, not by the shift alone).
    pub dp: Option<fedtune_server::DpSettings>,
}

/// Result of one run.
#[derive(Clone, Copy, Debug)]
pub struct OverheadResult {
    pub seconds: f64,
    pub final_mean: f64,
}

/// Runs the workload against a throwaway state directory (checkpoints written, fsync off).
pub async fn run(o: &Overhead) -> anyhow::Result<OverheadResult> {
    let dir = tempfile::tempdir()?;
    let server = ServerConfig {
        rounds: o.rounds,
        clients_per_round: o.clients,
        over_selection: 1.0,
        min_commit: o.clients,
        min_clients: o.clients,
        round_timeout: Duration::from_secs(3600),
        long_poll: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(45),
        seed: o.seed,
        max_concurrent_uploads: o.threads.max(2),
        durable: false,
        linger: Duration::ZERO,
        secagg: o.secagg.clone(),
        dp: o.dp.clone(),
        ..ServerConfig::default()
    };
    let cfg = SimConfig {
        server,
        clients: o.clients,
        transport: o.transport,
        threads: o.threads,
        concurrency: o.concurrency,
        faults: FaultRates::default(),
        connections: o.connections,
        state_dir: dir.path().to_path_buf(),
        compression: Compression::None,
    };
    let report = sim::run(&cfg, sin_model(o.params), Box::new(FedAvg), |_| {
        ShiftTrainer {
            shift: 0.001,
            examples: 10,
        }
    })
    .await?;
    Ok(OverheadResult {
        seconds: report.wall.as_secs_f64(),
        final_mean: mean(&report.model),
    })
}
