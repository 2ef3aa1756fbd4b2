//! `fedtune bench server-memory`: peak resident memory of a real `fedtune server` process
//! while N gRPC clients of this process push updates of a P-parameter model through it.

use std::process::Stdio;

use anyhow::Context;
use fedtune_client::Client;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;

use crate::models::ShiftTrainer;

/// Peak RSS of the server process, in MiB, for one federation of `clients` clients.
pub async fn measure(
    clients: usize,
    params: usize,
    rounds: u64,
    concurrency: usize,
    connections: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--linger",
            "30s",
            "--over-selection",
            "1",
            "--round-timeout",
            "1h",
        ])
        .args([
            "--model",
            &format!("sin:{params}"),
            "--rounds",
            &rounds.to_string(),
        ])
        .args([
            "--clients-per-round",
            &clients.to_string(),
            "--min-clients",
            &clients.to_string(),
        ])
        .args([
            "--min-commit",
            &clients.to_string(),
            "--no-fsync",
            "--log",
            "warn",
        ])
        .arg("--state")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting `fedtune server`")?;
    let pid = child.id().context("server has no pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let url = loop {
        let line = lines
            .next_line()
            .await?
            .context("server exited before listening")?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            break format!("http://{addr}");
        }
    };
    let cpu = Arc::new(Semaphore::new(2));
    let pool = crate::sim::connection_pool(&url, clients, connections, concurrency)?;
    let active = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let opts = crate::sim::device_options(i, 0, &cpu, &active);
        let client = Client::new(pool[i % pool.len()].clone(), opts);
        tasks.push(tokio::spawn(client.run(ShiftTrainer {
            shift: 0.001,
            examples: 10,
        })));
    }
    for t in tasks {
        t.await??;
    }
    let peak =
        super::rss::peak_rss_mib(Some(pid)).context("no VmHWM in the server's /proc status")?;
    child.kill().await.ok();
    Ok(peak)
}
