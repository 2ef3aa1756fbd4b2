//! Command-line parsing and dispatch.

mod aggregate;
mod bench;
mod buffer_args;
mod certs;
mod client;
mod dp_args;
mod eval;
mod export;
mod finetune;
mod generate;
mod infer;
mod logits;
mod lora_args;
mod merge;
mod perplexity;
mod pretrain;
mod privacy;
mod quantize;
mod secagg_args;
mod server;
mod simulate;
mod strategy_args;
mod tokenize;
mod train_args;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// fedtune: federated fine-tuning — a gRPC aggregation server, the device runtime, and a
/// simulator that runs thousands of virtual devices through the same code.
#[derive(Debug, Parser)]
#[command(name = "fedtune", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG wins
    /// [default: warn for simulate (thousands of devices), info otherwise].
    #[arg(long, global = true)]
    log: Option<String>,
    /// Longest JSON Lines record read from any data file, in bytes: longer records are skipped
    /// and counted, unparsed (one huge line must not take the memory of a run).
    #[arg(long, global = true, default_value_t = fedtune::text_data::DEFAULT_MAX_RECORD_BYTES, value_name = "BYTES")]
    max_record_bytes: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the aggregation server (gRPC) until its rounds are done or Ctrl-C.
    Server(Box<server::ServerArgs>),
    /// Run one device: join a server, train on local data each round, upload updates.
    Client(client::ClientArgs),
    /// The main job: federated LoRA fine-tuning on simulated devices (keyboard next-word or
    /// smart reply), with measurements, personalisation and a centralised baseline.
    Simulate(Box<simulate::SimulateArgs>),
    /// Print the token ids of a text, comma-separated (as llama.cpp tokenizes it).
    Tokenize(tokenize::TokenizeArgs),
    /// Write the logits of every position of a token sequence as a NumPy .npy file.
    Logits(logits::LogitsArgs),
    /// Generate text from a prompt.
    Generate(generate::GenerateArgs),
    /// Perplexity of a model on a text or JSONL file.
    Perplexity(perplexity::PerplexityArgs),
    /// Measure a model (and adapter) on a JSONL dataset: perplexity and next-word accuracy,
    /// printed as one JSON object.
    Eval(eval::EvalArgs),
    /// Re-quantize a GGUF model's weight matrices (q4_0, q4_1, q8_0, ...).
    Quantize(quantize::QuantizeArgs),
    /// Train a LoRA adapter on a text or JSONL file (the base model stays frozen).
    Finetune(finetune::FinetuneArgs),
    /// Train a small llama model from scratch (every weight) with a BPE vocabulary learnt from
    /// the same text; writes a GGUF model.
    Pretrain(pretrain::PretrainArgs),
    /// Convert a LoRA adapter between PEFT (safetensors) and llama.cpp's GGUF LoRA.
    Export(export::ExportArgs),
    /// Merge a LoRA adapter into its base model and write one GGUF model.
    Merge(merge::MergeArgs),
    /// Write a development CA, a server certificate and device certificates for TLS.
    Certs(certs::CertsArgs),
    /// One round of any aggregation strategy from files (devices' parameters or deltas),
    /// through the server's code; chain rounds with --state.
    Aggregate(aggregate::AggregateArgs),
    /// Differential privacy: ε for a run's settings, or the noise for a budget.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
    /// Measure the framework (figures only; nothing is asserted).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    fedtune::text_data::set_max_record_bytes(cli.max_record_bytes);
    let level = cli.log.clone().unwrap_or_else(|| {
        match cli.command {
            Command::Simulate(_) => "warn",
            _ => "info",
        }
        .to_string()
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level));
    // Colour only for a person at a terminal: a log redirected to a file stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let result = match cli.command {
        Command::Server(a) => server::run(*a),
        Command::Client(a) => client::run(a),
        Command::Simulate(a) => simulate::run(*a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Export(a) => export::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Certs(a) => certs::run(a),
        Command::Aggregate(a) => aggregate::run(a),
        Command::Privacy(p) => privacy::run(p),
        Command::Bench(b) => bench::run(b),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: many error types show their source
/// in their own message too, and printing the chain as it is repeated it two or three times.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    // Names read from files (metadata keys, tensor names, fields) may hold control bytes:
    // shown escaped, never sent to the terminal raw.
    line.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// How virtual devices run: shared by `simulate` and `bench overhead`.
#[derive(Debug, clap::Args, Clone)]
pub(crate) struct EngineArgs {
    /// How devices reach the server.
    #[arg(long, value_enum, default_value_t = fedtune::sim::TransportKind::Inproc)]
    pub transport: fedtune::sim::TransportKind,
    /// CPU threads for training [default: all cores].
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Devices holding a model at once [default: 2 × threads].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// HTTP/2 connections the devices share with --transport grpc (0: two per device that may
    /// hold a model at once, i.e. 2 × concurrency).
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
}

impl EngineArgs {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(default_threads)
    }
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(2 * self.threads())
    }
}

/// A tokio runtime with `threads` workers.
pub(crate) fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?)
}

/// Parses `250ms`, `30s`, `10m`, `1h` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 30s, 10m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `--threads N`: 1 up to [`fedtune::max_threads`] (more only adds switching and memory).
pub(crate) fn parse_threads(s: &str) -> Result<usize, String> {
    match parse_threads_or_all(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// `--threads N` where 0 means every core.
pub(crate) fn parse_threads_or_all(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    let max = fedtune::max_threads();
    if n > max {
        return Err(format!(
            "{n} is more than {max} (8 threads per core on this {}-core machine)",
            default_threads()
        ));
    }
    Ok(n)
}

/// Default CPU threads: what the machine offers.
pub(crate) fn default_threads() -> usize {
    fedtune::resources::cores()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Read {
            path: "m.gguf",
            source: io,
        })
        .context("loading the model");
        assert_eq!(
            one_line(&e),
            "loading the model: cannot read m.gguf: no such file"
        );
    }
}
