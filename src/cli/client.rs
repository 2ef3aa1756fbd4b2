//! `fedtune client`.

use std::sync::Arc;

use clap::Args;
use fedtune::sim::{FaultyTransport, Slow};
use fedtune_client::trainer::{LinRegData, LinRegTrainer};
use fedtune_client::{Client, ClientOptions, ClientTls, GrpcTransport};
use tokio::sync::Semaphore;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server URL: http://127.0.0.1:50051 (plaintext, this machine only unless --insecure),
    /// or https://HOST:PORT with --ca.
    #[arg(long)]
    server: String,
    /// The CA that signed the server's certificate (PEM), e.g. `fedtune certs`' ca.pem.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Mutual TLS: this device's certificate (PEM), signed by the CA the server trusts.
    #[arg(long, requires_all = ["tls_key", "ca"], value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// This device's private key (PEM), with --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// This device's Ed25519 key file (created on first use): every join is signed with it,
    /// as servers with --authorized-keys require.
    #[arg(long, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    /// Print the line to add to the server's authorized keys for --key (and this device's id)
    /// and exit.
    #[arg(long, requires = "key")]
    print_public_key: bool,
    /// Allow a plaintext http:// URL to another machine (its updates then cross the
    /// network readable).
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// This device's id, stable across restarts [default: device-<index>].
    #[arg(long)]
    id: Option<String>,
    /// Which synthetic data shard this device holds (the linear-regression demo learner).
    #[arg(long, default_value_t = 0)]
    index: u64,
    /// Seed of the federation's synthetic data (and of this device's training).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Local examples.
    #[arg(long, default_value_t = 64)]
    examples: usize,
    /// Features (must match the server's linreg:DIM model).
    #[arg(long, default_value_t = 16)]
    dim: usize,
    /// Extra time this device takes per round before uploading (emulates a slow device).
    #[arg(long, value_parser = super::parse_duration)]
    delay: Option<std::time::Duration>,
    /// Give up after failing to reach the server for this long (e.g. 10m) [default: never: a
    /// device outlives server restarts, retrying with capped, jittered exponential backoff].
    #[arg(long, value_parser = super::parse_duration)]
    give_up_after: Option<std::time::Duration>,
    /// CPU threads for training.
    #[arg(long, default_value_t = 1, value_parser = super::parse_threads)]
    threads: usize,
    /// Take part in the main job of this TOML file (as the server's `--job`): train its LoRA
    /// adapter on `--data`; `--index` is this device's number among `--clients`, its id
    /// defaults to the simulation's (`client-00003`), and the demo-learner flags are ignored.
    #[arg(long, requires = "data")]
    job: Option<std::path::PathBuf>,
    /// This device's own records (JSONL, the job's fields), in the order they were written.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// How many devices the job has (places this one in the job's device tiers).
    #[arg(long, default_value_t = 1)]
    clients: usize,
}

pub fn run(a: ClientArgs) -> anyhow::Result<()> {
    if a.print_public_key
        && let Some(path) = &a.key
    {
        let key = fedtune_client::identity::load_or_create(path)?;
        println!(
            "{}",
            fedtune_proto::identity::public_key_line(&key.verifying_key(), Some(&device_id(&a)))
        );
        return Ok(());
    }
    if let (Some(job), Some(data)) = (&a.job, &a.data) {
        let cfg = super::simulate::read_job(job)?;
        let trainer = fedtune::job::device_from_file(&cfg, data, a.index as usize, a.clients)?;
        return serve(&a, device_id(&a), cfg.seed, trainer);
    }
    anyhow::ensure!(
        a.examples > 0 && a.dim > 0,
        "--examples and --dim must be at least 1"
    );
    let data = LinRegData::synthetic(a.seed, a.index, a.examples, a.dim);
    let trainer = LinRegTrainer::new(data, fedtune::sim::trainer_seed(a.seed, a.index as usize));
    serve(&a, device_id(&a), a.seed, trainer)
}

/// `--id`, else the simulation's id for `--index` with a job, else `device-<index>`.
fn device_id(a: &ClientArgs) -> String {
    match (&a.id, &a.job) {
        (Some(id), _) => id.clone(),
        (None, Some(_)) => fedtune::sim::client_id(a.index as usize),
        (None, None) => format!("device-{}", a.index),
    }
}

/// Runs the device loop until the federation finishes.
fn serve(
    a: &ClientArgs,
    id: String,
    seed: u64,
    trainer: impl fedtune_client::Trainer,
) -> anyhow::Result<()> {
    let mut opts = ClientOptions::new(id);
    opts.seed = seed;
    opts.cpu = Arc::new(Semaphore::new(a.threads.max(1)));
    opts.backoff.give_up_after = a.give_up_after;
    if let Some(path) = &a.key {
        opts.identity = Some(Arc::new(fedtune_client::identity::load_or_create(path)?));
    }
    let tls = match &a.ca {
        Some(ca) => {
            let identity = a.tls_cert.as_deref().zip(a.tls_key.as_deref());
            Some(ClientTls::from_files(ca, identity)?)
        }
        None => None,
    };
    let server = a.server.clone();
    let (delay, insecure) = (a.delay, a.insecure);
    super::runtime(a.threads.max(1))?.block_on(async move {
        let transport = GrpcTransport::connect_lazy_with(&server, tls.as_ref(), insecure)?;
        let summary = match delay {
            // A straggler on purpose: its uploads wait.
            Some(d) => {
                let slow = FaultyTransport::new(
                    transport,
                    opts.client_id.clone(),
                    Arc::new(Slow(d)),
                    Arc::default(),
                );
                Client::new(slow, opts).run(trainer).await?
            }
            None => Client::new(transport, opts).run(trainer).await?,
        };
        println!(
            "client={} rounds_trained={} accepted={} refused={} final_version={}",
            summary.client_id,
            summary.rounds_trained,
            summary.accepted,
            summary.refused.len(),
            summary.final_version
        );
        Ok(())
    })
}
