//! `fedtune server`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fedtune_proto::TrainingPlan;
use fedtune_server::{Coordinator, ServerConfig, strategy::Strategy};

use fedtune::models::ModelSpec;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed as
    /// `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// State directory: SQLite database and checkpoints. A restarted server resumes from it.
    #[arg(long, default_value = "fedtune-state")]
    state: PathBuf,
    /// Initial global model when the state is new: linreg:DIM, sin:PARAMS or FILE.safetensors.
    #[arg(long, default_value = "linreg:16")]
    model: ModelSpec,
    /// Serve the main job of this TOML file (as `fedtune simulate --config`): the global model
    /// is its LoRA adapter and its settings set the rounds; the round flags are then ignored
    /// but `--min-clients` (the number of devices) and `--round-timeout`.
    #[arg(long)]
    job: Option<PathBuf>,
    #[command(flatten)]
    strategy: super::strategy_args::StrategyArgs,
    #[command(flatten)]
    buffer: super::buffer_args::BufferArgs,
    #[command(flatten)]
    rounds: RoundArgs,
    /// How long to keep answering "finished" after the last round before exiting.
    #[arg(long, default_value = "3s", value_parser = super::parse_duration)]
    linger: Duration,
    /// Skip fsync on commit (benchmarks only: a power cut could lose the last round).
    #[arg(long)]
    no_fsync: bool,
    /// Keep only the newest N round checkpoints on disk (0: keep every round's model). The
    /// database keeps every round's record; a restart needs only the newest checkpoint.
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_checkpoints: u64,
    /// Most devices the server keeps track of; beyond it a join is refused as busy (the
    /// device retries) unless an id that never checked in can make room.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_devices: usize,
    /// Admit only enrolled devices: each join must be signed by a key listed in FILE (one per
    /// line, as `fedtune client --key K --print-public-key` prints it). Read again when it
    /// changes or on SIGHUP.
    #[arg(long, value_name = "FILE")]
    authorized_keys: Option<PathBuf>,
    #[command(flatten)]
    tls: ServerTlsArgs,
    #[command(flatten)]
    secagg: super::secagg_args::SecAggArgs,
    #[command(flatten)]
    dp: super::dp_args::DpArgs,
}

/// TLS for every call. Without it the server speaks plaintext, which it allows on loopback
/// addresses only unless `--insecure`.
#[derive(Debug, Args)]
struct ServerTlsArgs {
    /// The server's certificate chain (PEM, leaf first), e.g. `fedtune certs`' server.pem.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: devices must present a certificate signed by this CA (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address (updates then cross the network readable).
    #[arg(long, conflicts_with = "tls_cert")]
    insecure: bool,
}

impl ServerTlsArgs {
    fn load(&self) -> anyhow::Result<Option<fedtune_server::ServerTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(fedtune_server::ServerTls::from_files(
            cert,
            key,
            self.client_ca.as_deref(),
        )?))
    }
}

/// Round settings shared by `server` and `simulate`.
#[derive(Debug, Args, Clone)]
pub struct RoundArgs {
    /// Rounds to run.
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
    /// Updates each round waits for (K).
    #[arg(long, default_value_t = 10)]
    pub clients_per_round: usize,
    /// Cohort size as a multiple of K (extra devices absorb dropouts).
    #[arg(long, default_value_t = 1.3)]
    pub over_selection: f64,
    /// Fewest updates a round commits with at its deadline [default: 80% of K].
    #[arg(long)]
    pub min_commit: Option<usize>,
    /// Registered devices needed before the first round opens [default: K].
    #[arg(long)]
    pub min_clients: Option<usize>,
    /// Deadline of a round [default: 10m; with --job, the job's, unless given].
    #[arg(long, value_parser = super::parse_duration)]
    pub round_timeout: Option<Duration>,
    /// Seed for cohort sampling (and, in simulations, for everything else).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Local SGD steps per round.
    #[arg(long, default_value_t = 10)]
    pub local_steps: u32,
    /// Local batch size.
    #[arg(long, default_value_t = 16)]
    pub batch_size: u32,
    /// Local learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
}

impl RoundArgs {
    /// The round settings the flags give; `Coordinator::open` validates them (the same
    /// validation a `--job` and the simulation go through).
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let k = self.clients_per_round;
        Ok(ServerConfig {
            rounds: self.rounds,
            clients_per_round: k,
            over_selection: self.over_selection,
            min_commit: self.min_commit.unwrap_or((k * 4).div_ceil(5)).max(1),
            min_clients: self.min_clients.unwrap_or(k),
            round_timeout: self.round_timeout.unwrap_or(Duration::from_secs(600)),
            seed: self.seed,
            training: TrainingPlan {
                local_steps: self.local_steps,
                batch_size: self.batch_size,
                learning_rate: self.lr,
                ..TrainingPlan::default()
            },
            ..ServerConfig::default()
        })
    }
}

/// The server's settings, initial model and strategy, from a `--job` (with the strategy
/// flags laid over the job's) or from the round flags.
fn setup(
    a: &ServerArgs,
) -> anyhow::Result<(ServerConfig, fedtune_proto::Bundle, Box<dyn Strategy>)> {
    let Some(path) = &a.job else {
        let initial = a
            .model
            .build()
            .with_context(|| format!("building the initial model {:?}", a.model))?;
        let mut config = a.rounds.config()?;
        config.buffered = a
            .buffer
            .settings(config.clients_per_round, config.round_timeout);
        return Ok((config, initial, a.strategy.build()?));
    };
    let mut job = super::simulate::read_job(path)?;
    a.strategy.lay_over(&mut job)?;
    a.buffer.lay_over(&mut job);
    let strategy = job.strategy().map_err(anyhow::Error::msg)?;
    let devices = a
        .rounds
        .min_clients
        .context("--job needs --min-clients: how many devices take part")?;
    let (initial, mut config) = fedtune::job::server_setup(&job, devices)?;
    if let Some(timeout) = a.rounds.round_timeout {
        config.round_timeout = timeout;
    }
    Ok((config, initial, strategy))
}

pub fn run(a: ServerArgs) -> anyhow::Result<()> {
    let (mut config, initial, strategy) = setup(&a)?;
    config.linger = a.linger;
    config.durable = !a.no_fsync;
    config.keep_checkpoints = a.keep_checkpoints;
    config.max_devices = a.max_devices;
    config.authorized_keys = a.authorized_keys.clone();
    if a.secagg.secagg {
        config.secagg = Some(a.secagg.apply(config.secagg.take().unwrap_or_default()));
    }
    config.dp = a.dp.apply(config.dp.take());
    let tls = a.tls.load()?;
    super::runtime(super::default_threads())?.block_on(async move {
        // Bind first: an address that cannot be served leaves no state behind.
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let bound = listener.local_addr()?;
        anyhow::ensure!(
            tls.is_some() || a.tls.insecure || bound.ip().is_loopback(),
            "{bound} is not a loopback address: serve it with TLS (--tls-cert, --tls-key; \
             `fedtune certs` writes a development set), or pass --insecure for plaintext"
        );
        let coord = Coordinator::open(config, &a.state, initial, strategy)
            .with_context(|| format!("opening server state in {}", a.state.display()))?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hangups = signal(SignalKind::hangup())?;
            let c = coord.clone();
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reading the authorized keys again");
                    c.reload_authorized_keys();
                }
            });
        }
        let c = coord.clone();
        let linger = a.linger;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
                _ = async { c.finished().await; tokio::time::sleep(linger).await } => {}
            }
        };
        fedtune_server::serve_tls(coord.clone(), listener, tls.as_ref(), shutdown).await?;
        let status = coord.status();
        println!(
            "model_version={} registered_clients={}",
            status.model_version, status.registered_clients
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    /// With `--job`, the job sets the rounds, but a `--round-timeout` given is kept.
    #[test]
    fn a_job_server_keeps_its_round_timeout_flag() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "rounds = 3\n").unwrap();
        let job = job.to_str().unwrap();
        let args = ["server", "--job", job, "--min-clients", "2"];
        let (config, _, _) = setup(&Cli::parse_from(args).server).unwrap();
        assert_eq!(config.rounds, 3);
        let from_job = config.round_timeout;
        let args = [&args[..], &["--round-timeout", "20s"]].concat();
        let (config, _, _) = setup(&Cli::parse_from(args).server).unwrap();
        assert_eq!(config.round_timeout, Duration::from_secs(20));
        assert_ne!(from_job, config.round_timeout);
    }
}
