//! Buffered asynchronous aggregation (FedBuff) over real loopback gRPC: devices take tasks on
//! the newest model whenever a slot is free, each update is weighted by 1/√(1+staleness),
//! updates too stale are refused, every `buffer_size` updates make a version — and a
//! `fedtune server` process SIGKILLed with a half-full buffer, restarted on its state, neither
//! loses nor double-counts an update it acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawClient, quick_config, start, upload_messages};
use fedtune_proto::{Bundle, Tensor, v1};
use fedtune_server::{BufferedSettings, ServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

fn bundle(w: &[f32], b: f32) -> Bundle {
    Bundle::new(vec![
        Tensor::from_f32("linear.weight", vec![w.len()], w).unwrap(),
        Tensor::from_f32("linear.bias", vec![1], &[b]).unwrap(),
    ])
    .unwrap()
}

/// Device `i`'s update: distinct values, exactly representable.
fn delta(i: usize) -> Bundle {
    let w: Vec<f32> = (0..4).map(|k| (i * 4 + k) as f32 * 0.25 - 1.0).collect();
    bundle(&w, i as f32 * 0.5)
}

fn values(b: &Bundle) -> Vec<f64> {
    b.tensors()
        .iter()
        .flat_map(|t| t.to_f32().iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
        .collect()
}

/// `base` + Σ wᵢ·dᵢ / Σ wᵢ.
fn expected(base: &[f64], parts: &[(Bundle, f64)]) -> Vec<f64> {
    let total: f64 = parts.iter().map(|(_, w)| w).sum();
    let mut out = base.to_vec();
    for (d, w) in parts {
        for (o, v) in out.iter_mut().zip(values(d)) {
            *o += w * v / total;
        }
    }
    out
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "element {k}: {g} vs {w}"
        );
    }
}

fn buffered(buffer_size: usize, concurrency: usize, rounds: u64) -> ServerConfig {
    ServerConfig {
        buffered: Some(BufferedSettings {
            buffer_size,
            max_staleness: 1,
            concurrency,
            task_timeout: Duration::from_secs(60),
        }),
        ..quick_config(rounds, concurrency, 4)
    }
}

async fn committed(server: &common::TestServer, version: u64) {
    for _ in 0..500 {
        if server.coord.status().committed_rounds >= version {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("version {version} was not committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_updates_weigh_less_and_too_stale_ones_are_refused() {
    let initial = bundle(&[1.0, 2.0, 3.0, 4.0], 0.5);
    let server = start(buffered(2, 4, 3), initial.clone()).await;
    let mut devs = Vec::new();
    for i in 0..4 {
        devs.push(RawClient::join(&server.url, &format!("dev-{i}")).await);
    }
    // Four slots: dev-0..3 take tasks on version 0; dev-4 is told to come back.
    let mut tasks = Vec::new();
    for d in devs.iter_mut() {
        let t = d.task().await;
        assert_eq!(t.model_version, 0);
        tasks.push(t);
    }
    devs.push(RawClient::join(&server.url, "dev-4").await);
    assert!(devs[4].offered.is_none());
    let resp = devs[4].try_check_in().await.unwrap();
    assert!(matches!(
        resp.outcome,
        Some(v1::check_in_response::Outcome::RetryAfterMs(_))
    ));

    // Version 1: dev-0 and dev-1, fresh (weights 10 and 30).
    for (i, n) in [(0, 10), (1, 30)] {
        devs[i]
            .send(upload_messages(&tasks[i], &delta(i), n))
            .await
            .unwrap();
    }
    committed(&server, 1).await;
    let v1 = expected(&values(&initial), &[(delta(0), 10.0), (delta(1), 30.0)]);
    assert_close(&values(&server.coord.global().1), &v1);

    // dev-4 now gets a slot, on version 1. dev-2's update (version 0) is one version stale:
    // weight 20/√2; dev-4's is fresh: weight 20. Together they make version 2.
    let t4 = devs[4].task().await;
    assert_eq!(t4.model_version, 1);
    devs[2]
        .send(upload_messages(&tasks[2], &delta(2), 20))
        .await
        .unwrap();
    devs[4]
        .send(upload_messages(&t4, &delta(4), 20))
        .await
        .unwrap();
    committed(&server, 2).await;
    let v2 = expected(&v1, &[(delta(2), 20.0 / 2f64.sqrt()), (delta(4), 20.0)]);
    assert_close(&values(&server.coord.global().1), &v2);

    // dev-3 trained on version 0, two versions ago: refused (max_staleness 1).
    let e = devs[3]
        .send(upload_messages(&tasks[3], &delta(3), 5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("2 versions old"), "{}", e.message());
    // The store records each version's contributions with their weights.
    let weights = server.coord.with_store(|s| {
        s.contributions(2)
            .unwrap()
            .into_iter()
            .map(|c| (c.client_id, c.weight))
            .collect::<Vec<_>>()
    });
    assert_eq!(weights.len(), 2);
    assert!(weights.contains(&("dev-4".to_string(), 20.0)));
    assert!(
        weights
            .iter()
            .any(|(c, w)| c == "dev-2" && (w - 20.0 / 2f64.sqrt()).abs() < 1e-12)
    );
}

/// A server process, killed when dropped (also when a check fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A buffered `fedtune server` on `port`: three updates a version, two versions.
fn server_process(port: u16, state: &Path) -> Server {
    let child = Command::new(BIN)
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--model",
            "linreg:4",
            "--rounds",
            "2",
            "--clients-per-round",
            "4",
        ])
        .args([
            "--min-clients",
            "4",
            "--min-commit",
            "1",
            "--buffer-size",
            "3",
        ])
        .args(["--max-staleness", "3", "--linger", "5s", "--log", "warn"])
        .arg("--state")
        .arg(state)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

async fn up(url: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(mut rpc) = v1::federation_client::FederationClient::connect(url.to_string()).await
            && rpc.get_status(v1::StatusRequest {}).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not come up");
}

/// The values of model `version` once the server has committed it.
async fn checkpoint(state: &Path, version: u64) -> Vec<f64> {
    let path = state
        .join("checkpoints")
        .join(fedtune_server::store::checkpoint_file(version));
    let until = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < until,
            "version {version} was not committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    values(
        &fedtune_server::store::read_checkpoint(&path, None)
            .unwrap()
            .0,
    )
}

/// SIGKILL (what `Child::kill` sends on Unix).
fn kill(server: Server) {
    drop(server);
}

/// The four devices, joined at once (each first check-in is held until a task or the
/// server's long poll).
async fn devices(url: &str) -> Vec<RawClient> {
    let ids: Vec<String> = (0..4).map(|i| format!("dev-{i}")).collect();
    futures::future::join_all(ids.iter().map(|id| RawClient::join(url, id))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_buffered_server_keeps_every_acknowledged_update_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let zero = vec![0.0; 5];

    // Two of version 1's three updates are acknowledged; then SIGKILL.
    let server = server_process(port, &state);
    up(&url).await;
    let mut devs = devices(&url).await;
    let mut tasks = Vec::new();
    for d in devs.iter_mut() {
        tasks.push(d.task().await);
    }
    for i in 0..2 {
        devs[i]
            .send(upload_messages(&tasks[i], &delta(i), 1 + i as u64))
            .await
            .unwrap();
    }
    kill(server);

    let server = server_process(port, &state);
    up(&url).await;
    let mut devs = devices(&url).await;
    // An acknowledged update sent again (its device never saw the answer, say) is refused:
    // its task died with the old process.
    let e = devs[0]
        .send(upload_messages(&tasks[0], &delta(0), 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    // dev-0 and dev-1 are in version 1's buffer already: no task for them until it commits
    // (their first check-in, held for the long poll, offered none).
    assert!(devs[0].offered.is_none() && devs[1].offered.is_none());
    let t2 = devs[2].task().await;
    let t3 = devs[3].task().await;
    devs[2]
        .send(upload_messages(&t2, &delta(2), 3))
        .await
        .unwrap();
    let want_v1 = expected(&zero, &[(delta(0), 1.0), (delta(1), 2.0), (delta(2), 3.0)]);
    assert_close(&checkpoint(&state, 1).await, &want_v1);

    // Version 2: dev-3's update (trained on version 0, one version stale) is acknowledged,
    // then SIGKILL between updates once more.
    devs[3]
        .send(upload_messages(&t3, &delta(3), 4))
        .await
        .unwrap();
    kill(server);
    let server = server_process(port, &state);
    up(&url).await;
    let mut devs = devices(&url).await;
    let t0 = devs[0].task().await;
    let t1 = devs[1].task().await;
    assert_eq!((t0.model_version, t1.model_version), (1, 1));
    devs[0]
        .send(upload_messages(&t0, &delta(5), 2))
        .await
        .unwrap();
    devs[1]
        .send(upload_messages(&t1, &delta(6), 2))
        .await
        .unwrap();
    let want_v2 = expected(
        &want_v1,
        &[
            (delta(3), 4.0 / 2f64.sqrt()),
            (delta(5), 2.0),
            (delta(6), 2.0),
        ],
    );
    assert_close(&checkpoint(&state, 2).await, &want_v2);
    kill(server);
    // Nothing is left in the journal once its version is committed.
    let left: Vec<_> = std::fs::read_dir(state.join("buffer"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
