//! `fedtune simulate`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fedtune::sim::{self, FaultRates, SimConfig};
use fedtune_client::trainer::{LinRegData, LinRegTrainer, linreg_model};
use fedtune_proto::Compression;
use fedtune_server::strategy::FedAvg;

use super::server::RoundArgs;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Virtual devices.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    #[command(flatten)]
    rounds: RoundArgs,
    #[command(flatten)]
    engine: super::EngineArgs,
    /// Features of the linear-regression demo learner.
    #[arg(long, default_value_t = 16)]
    dim: usize,
    /// Local examples per device.
    #[arg(long, default_value_t = 64)]
    examples: usize,
    /// Probability that a selected device drops out (before download, mid-download or
    /// mid-upload, in equal shares) in a round.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Probability that a device is a straggler in a round.
    #[arg(long, default_value_t = 0.0)]
    straggler_rate: f64,
    /// Extra time a straggler takes.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    straggler_delay: Duration,
    /// Compress uploads with zstd.
    #[arg(long)]
    zstd: bool,
    /// Server state directory [default: a fresh temporary directory].
    #[arg(long)]
    state: Option<PathBuf>,
}

pub fn run(a: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.drop_rate),
        "--drop-rate must be within 0..1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.straggler_rate),
        "--straggler-rate must be within 0..1"
    );
    let mut server = a.rounds.config()?;
    server.min_clients = a.clients;
    server.linger = Duration::ZERO;
    server.long_poll = Duration::from_secs(30);
    let threads = a.engine.threads();
    let tmp = tempfile::tempdir()?;
    let state_dir = a.state.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let seed = server.seed;
    let cfg = SimConfig {
        server,
        clients: a.clients,
        transport: a.engine.transport,
        threads,
        concurrency: a.engine.concurrency(),
        faults: FaultRates {
            drop_before_download: a.drop_rate / 3.0,
            drop_during_download: a.drop_rate / 3.0,
            drop_during_upload: a.drop_rate / 3.0,
            straggler: a.straggler_rate,
            straggler_delay: a.straggler_delay,
        },
        connections: a.engine.connections,
        state_dir,
        compression: if a.zstd {
            Compression::Zstd
        } else {
            Compression::None
        },
    };
    let (dim, examples) = (a.dim, a.examples);
    let data = |i: usize| LinRegData::synthetic(seed, i as u64, examples, dim);
    let report = super::runtime(threads)?.block_on(sim::run(
        &cfg,
        linreg_model(dim),
        Box::new(FedAvg),
        |i| LinRegTrainer::new(data(i), sim::trainer_seed(seed, i)),
    ))?;
    println!("{:>5} {:>8} {:>14}", "round", "updates", "loss_before");
    let rounds = report.coordinator.with_store(|s| s.rounds())?;
    for (round, n) in rounds.into_iter().filter(|(r, _)| *r > 0) {
        let loss = report
            .coordinator
            .with_store(|s| s.mean_metric(round, "train_loss_before"))?;
        println!("{round:>5} {n:>8} {:>14.6}", loss.unwrap_or(f64::NAN));
    }
    let pooled: Vec<LinRegData> = (0..a.clients).map(data).collect();
    let loss = |m| {
        pooled
            .iter()
            .map(|d| d.mse(m))
            .sum::<Result<f64, _>>()
            .map(|s| s / pooled.len() as f64)
    };
    let dropped: u64 = report.clients.iter().map(|c| c.dropped).sum();
    let refused: usize = report.clients.iter().map(|c| c.refused.len()).sum();
    println!(
        "initial_loss={:.6} final_loss={:.6} version={} dropped={dropped} refused={refused} wall_s={:.3}",
        loss(&linreg_model(dim))?,
        loss(&report.model)?,
        report.version,
        report.wall.as_secs_f64()
    );
    Ok(())
}
