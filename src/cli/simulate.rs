//! `fedtune simulate`: the main job, federated LoRA personalisation, on simulated devices.
//! Settings come from the defaults, then `--config FILE` (TOML), then the flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fedtune::job::{self, JobConfig, Partition, Task};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// A TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the run's files go [default: runs/<UTC timestamp>].
    #[arg(long)]
    out: Option<PathBuf>,

    /// Base model: `embedded` (tiny Shakespeare llama), `smollm2`, `gemma3`, or a GGUF file
    /// [default: embedded].
    #[arg(long)]
    model: Option<String>,
    /// What the devices learn [default: keyboard].
    #[arg(long, value_enum)]
    task: Option<Task>,
    /// Your own data: a JSONL file [default: the embedded plays no base model saw].
    #[arg(long)]
    data: Option<String>,
    /// JSONL field naming the client; `a+b` joins fields [default: play+speaker].
    #[arg(long)]
    client_field: Option<String>,
    /// JSONL field with the text (the message, for smart reply) [default: text].
    #[arg(long)]
    text_field: Option<String>,
    /// JSONL field with the reply (smart reply on your own data).
    #[arg(long)]
    reply_field: Option<String>,
    /// How records become clients: natural (one per client field value), iid, dirichlet.
    #[arg(long, value_parser = ["natural", "iid", "dirichlet"])]
    partition: Option<String>,
    /// Concentration of the Dirichlet client sizes (smaller: more skewed) [default: 0.5].
    #[arg(long)]
    dirichlet_alpha: Option<f64>,
    /// With --partition iid or dirichlet: devices to deal the records to (thousands, say,
    /// for differential privacy) [default: as many as the natural partition has].
    #[arg(long, value_name = "N")]
    num_clients: Option<usize>,
    /// Clients with fewer records are left out [default: 8].
    #[arg(long)]
    min_examples: Option<usize>,
    /// Share of each client's records (its latest) kept as its local test split [default: 0.2].
    #[arg(long)]
    test_fraction: Option<f64>,
    /// Share of clients that never train [default: 0.1].
    #[arg(long)]
    unseen_fraction: Option<f64>,
    /// Clients measured: training clients every round, unseen ones before and after (0: all)
    /// [default: 24].
    #[arg(long)]
    eval_clients: Option<usize>,

    /// Measure the training clients every this many rounds (and the first and last) [default: 1].
    #[arg(long)]
    eval_every: Option<u64>,

    /// Rounds [default: 10].
    #[arg(long)]
    rounds: Option<u64>,
    /// Updates each round aggregates (K) [default: 10].
    #[arg(long)]
    clients_per_round: Option<usize>,
    /// Cohort size as a multiple of K (absorbs dropouts; the first K updates count) [default: 1].
    #[arg(long)]
    over_selection: Option<f64>,
    /// Local optimiser steps per round [default: 6].
    #[arg(long)]
    local_steps: Option<u32>,
    /// Local batch size (sequences) [default: 4].
    #[arg(long)]
    batch_size: Option<u32>,
    /// Local learning rate (AdamW) [default: 3e-3].
    #[arg(long)]
    lr: Option<f32>,
    /// Tokens per training sequence [default: 64].
    #[arg(long)]
    seq: Option<usize>,
    /// FedProx μ (0: plain FedAvg) [default: 0].
    #[arg(long)]
    prox_mu: Option<f32>,
    /// Device tiers, `steps_scale:share[:rank],...` (e.g. 0.5:0.3:4,1:0.5:8,2:0.2:16: a
    /// third field gives the tier its own LoRA rank; the global adapter has the largest)
    /// [default: one tier].
    #[arg(long)]
    tiers: Option<String>,
    /// Probability that a selected device drops out in a round [default: 0].
    #[arg(long)]
    drop_rate: Option<f64>,
    /// Probability that a device is a straggler in a round [default: 0].
    #[arg(long)]
    straggler_rate: Option<f64>,
    /// How late a straggler is, in milliseconds [default: 200].
    #[arg(long)]
    straggler_delay_ms: Option<u64>,
    /// Share of the training devices that send poisoned updates [default: 0].
    #[arg(long, value_name = "R")]
    byzantine_rate: Option<f64>,
    /// How Byzantine devices poison their update Δ: sign-flip (−S·Δ), gaussian (noise of S
    /// times Δ's RMS) or scale (S·Δ) [default: sign-flip].
    #[arg(long, value_enum)]
    attack: Option<fedtune::sim::Attack>,
    /// The attack's strength S [default: 10].
    #[arg(long, value_name = "S")]
    attack_scale: Option<f64>,

    /// LoRA rank [default: 8].
    #[arg(long)]
    rank: Option<usize>,
    /// LoRA alpha (scale alpha/rank) [default: 16].
    #[arg(long)]
    alpha: Option<f32>,
    /// Projections to adapt: q,k,v,o,gate,up,down or all [default: q,k,v,o].
    #[arg(long)]
    targets: Option<String>,
    /// FFA-LoRA: every A stays at its seeded initialisation; devices train and upload B only.
    #[arg(long)]
    ffa_lora: bool,

    /// Local steps each measured unseen client fine-tunes the final adapter (0: skip)
    /// [default: 5].
    #[arg(long)]
    personalize_steps: Option<u64>,
    /// Learning rate of the personalisation steps [default: 1e-3].
    #[arg(long)]
    personalize_lr: Option<f32>,
    /// Skip the centralised baseline.
    #[arg(long)]
    no_centralized: bool,
    /// Smart reply: candidate replies per message [default: 8].
    #[arg(long)]
    candidates: Option<usize>,

    /// Seeds everything: clients, cohorts, batches, initialisation, faults [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// CPU threads (0: all cores) [default: 0].
    #[arg(long, value_parser = super::parse_threads_or_all)]
    threads: Option<usize>,
    /// Devices holding a model at once (0: twice the threads) [default: 0].
    #[arg(long)]
    concurrency: Option<usize>,
    /// How devices reach the server: inproc, or grpc (real loopback gRPC) [default: inproc].
    #[arg(long, value_parser = ["inproc", "grpc"])]
    transport: Option<String>,
    #[command(flatten)]
    secagg: super::secagg_args::SecAggArgs,
    #[command(flatten)]
    dp: super::dp_args::DpArgs,
    #[command(flatten)]
    strategy: super::strategy_args::StrategyArgs,
    #[command(flatten)]
    buffer: super::buffer_args::BufferArgs,
}

impl SimulateArgs {
    /// Defaults, then the config file, then the flags.
    fn resolve(&self) -> anyhow::Result<JobConfig> {
        let mut cfg = match &self.config {
            Some(path) => read_job(path)?,
            None => JobConfig::default(),
        };
        macro_rules! flags {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = v.clone(); } )* };
        }
        flags!(
            model,
            task,
            data,
            client_field,
            text_field,
            reply_field,
            min_examples,
            num_clients,
            test_fraction,
            unseen_fraction,
            eval_clients,
            eval_every,
            rounds,
            clients_per_round,
            over_selection,
            local_steps,
            batch_size,
            lr,
            seq,
            prox_mu,
            tiers,
            drop_rate,
            straggler_rate,
            straggler_delay_ms,
            byzantine_rate,
            attack,
            attack_scale,
            rank,
            alpha,
            targets,
            personalize_steps,
            personalize_lr,
            candidates,
            seed,
            threads,
            concurrency,
            transport
        );
        let alpha = self.dirichlet_alpha.unwrap_or(match cfg.partition {
            Partition::Dirichlet { alpha } => alpha,
            _ => 0.5,
        });
        match self.partition.as_deref() {
            Some("natural") => cfg.partition = Partition::Natural,
            Some("iid") => cfg.partition = Partition::Iid,
            Some("dirichlet") => cfg.partition = Partition::Dirichlet { alpha },
            _ => {
                if let Partition::Dirichlet { .. } = cfg.partition {
                    cfg.partition = Partition::Dirichlet { alpha };
                }
            }
        }
        let s = &self.secagg;
        cfg.secagg |= s.secagg;
        cfg.secagg_neighbours = s.secagg_neighbours.unwrap_or(cfg.secagg_neighbours);
        cfg.secagg_threshold = s.secagg_threshold.unwrap_or(cfg.secagg_threshold);
        cfg.secagg_clip = s.secagg_clip.unwrap_or(cfg.secagg_clip);
        cfg.secagg_bits = s.secagg_bits.unwrap_or(cfg.secagg_bits);
        if let Some(t) = s.secagg_stage_timeout {
            cfg.secagg_stage_timeout_ms = t.as_millis() as u64;
        }
        self.dp.lay_over(&mut cfg);
        self.strategy.lay_over(&mut cfg)?;
        self.buffer.lay_over(&mut cfg);
        if self.no_centralized {
            cfg.centralized = false;
        }
        if self.ffa_lora {
            cfg.ffa_lora = true;
        }
        if !cfg.data.is_empty() && self.client_field.is_none() && self.config.is_none() {
            anyhow::bail!("--data needs --client-field (the field naming each record's client)");
        }
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

/// A job's TOML file (unknown keys are errors; missing ones take their defaults).
pub fn read_job(path: &std::path::Path) -> anyhow::Result<JobConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    JobConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn run(a: SimulateArgs) -> anyhow::Result<()> {
    let cfg = a.resolve()?;
    let out = a.out.clone().unwrap_or_else(job::default_out_dir);
    let prepared = job::prepare(&cfg)?;
    let report = job::run::run(&prepared, &out)?;
    print!("{}", job::report::table(&report));
    println!("run files: {}", out.display());
    Ok(())
}
