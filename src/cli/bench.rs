//! `fedtune bench ...`.

use clap::{Args, Subcommand};
use fedtune::bench::{overhead, server_memory};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Framework overhead on a fixed workload comparable with Flower's simulation. The last
    /// line is `fedtune_s=<wall seconds> final_mean=<mean of the final model>`.
    Overhead(OverheadArgs),
    /// Peak RSS of a real `fedtune server` process for several client counts.
    ServerMemory(MemoryArgs),
}

#[derive(Debug, Args)]
pub struct OverheadArgs {
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Float32 values in the model.
    #[arg(long, default_value_t = 1_000_000)]
    params: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    engine: super::EngineArgs,
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Client counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    clients: Vec<usize>,
    #[arg(long, default_value_t = 1_000_000)]
    params: usize,
    #[arg(long, default_value_t = 2)]
    rounds: u64,
    /// Clients holding a model at once in this (client) process.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// HTTP/2 connections the clients share (0: one per 64 clients; use N = clients for one
    /// connection per client).
    #[arg(long, default_value_t = 0)]
    connections: usize,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Overhead(a) => {
            anyhow::ensure!(
                a.clients > 0 && a.rounds > 0 && a.params > 0,
                "--clients, --rounds and --params must be positive"
            );
            let threads = a.engine.threads();
            let o = overhead::Overhead {
                clients: a.clients,
                rounds: a.rounds,
                params: a.params,
                transport: a.engine.transport,
                seed: a.seed,
                threads,
                concurrency: a.engine.concurrency(),
                connections: a.engine.connections,
            };
            println!(
                "workload: clients={} rounds={} params={} transport={:?} threads={threads}",
                o.clients, o.rounds, o.params, o.transport
            );
            let expected = fedtune::models::mean(&fedtune::models::sin_model(o.params))
                + 0.001 * o.rounds as f64;
            println!("expected_mean={expected}");
            let r = super::runtime(threads)?.block_on(overhead::run(&o))?;
            println!("fedtune_s={:.6} final_mean={}", r.seconds, r.final_mean);
        }
        BenchCommand::ServerMemory(a) => {
            let rt = super::runtime(super::default_threads())?;
            let model_mib = a.params as f64 * 4.0 / (1024.0 * 1024.0);
            for &n in &a.clients {
                let peak = rt.block_on(server_memory::measure(
                    n,
                    a.params,
                    a.rounds,
                    a.concurrency,
                    a.connections,
                ))?;
                println!(
                    "clients={n} params={} server_peak_rss_mib={peak:.1} bound_mib={:.1}",
                    a.params,
                    3.0 * model_mib + 64.0
                );
            }
        }
    }
    Ok(())
}
