//! Crash safety: a `fedtune server` process killed with SIGKILL mid-round and between rounds,
//! restarted on the same state directory, ends with the same model, bit for bit, as a run
//! that was never interrupted, also when the interrupted server keeps only its newest
//! checkpoints, with FedAvg and with a server optimiser (FedAdam) whose state is
//! checkpointed with the model. Six devices for a cohort of four: the restarted server must draw the cohorts
//! the uninterrupted one drew, from the registrations it stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedtune_proto::v1::{self, federation_client::FederationClient};

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");
/// Devices, and the cohort drawn from them each round.
const CLIENTS: usize = 6;
const K: usize = 4;
const ROUNDS: u64 = 6;
/// `--keep-checkpoints` of the interrupted run.
const KEEP: u64 = 2;

/// A server process; `keep` is its `--keep-checkpoints`, `strategy` its strategy flags.
fn server(port: u16, state: &Path, keep: u64, strategy: &[&str]) -> Child {
    Command::new(BIN)
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--model",
            "linreg:8",
            "--seed",
            "7",
        ])
        .args([
            "--rounds",
            &ROUNDS.to_string(),
            "--clients-per-round",
            &K.to_string(),
            "--over-selection",
            "1",
        ])
        .args([
            "--min-clients",
            &CLIENTS.to_string(),
            "--min-commit",
            &K.to_string(),
            "--linger",
            "5s",
            "--log",
            "warn",
        ])
        .args(["--keep-checkpoints", &keep.to_string()])
        .args(strategy)
        .arg("--state")
        .arg(state)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn clients(port: u16) -> Vec<Child> {
    (0..CLIENTS)
        .map(|i| {
            Command::new(BIN)
                .args([
                    "client",
                    "--server",
                    &format!("http://127.0.0.1:{port}"),
                    "--id",
                    &format!("dev-{i}"),
                ])
                .args([
                    "--index",
                    &i.to_string(),
                    "--seed",
                    "7",
                    "--dim",
                    "8",
                    "--log",
                    "warn",
                ])
                // Staggered slow devices, so a round is long enough to be caught half done.
                .args(["--delay", &format!("{}ms", 60 * (i + 1))])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect()
}

async fn status(port: u16) -> Option<v1::StatusResponse> {
    let mut rpc = FederationClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    Some(
        rpc.get_status(v1::StatusRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

/// Polls the server until `pred` holds.
async fn wait_for(port: u16, what: &str, pred: impl Fn(&v1::StatusResponse) -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Some(s) = status(port).await
            && pred(&s)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for {what}");
}

fn wait_all(children: Vec<Child>) {
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "client failed: {status}");
    }
}

/// The last model's bytes, and who was counted in each round.
fn final_model(state: &Path) -> (Vec<u8>, Vec<Vec<String>>) {
    let store = fedtune_server::Store::open(state, false).unwrap();
    let last = store.last_committed().unwrap().unwrap();
    assert_eq!(last.round, ROUNDS);
    let rounds = store.rounds().unwrap();
    assert!(
        rounds.iter().all(|&(r, n)| r == 0 || n == K),
        "every round counts K devices once: {rounds:?}"
    );
    let (model, _) =
        fedtune_server::store::read_checkpoint(&last.checkpoint, Some(last.digest)).unwrap();
    let bytes = model
        .tensors()
        .iter()
        .flat_map(|t| t.data().to_vec())
        .collect();
    let cohorts = (1..=ROUNDS)
        .map(|r| {
            let mut c = store.contributors(r).unwrap();
            c.sort();
            c
        })
        .collect();
    (bytes, cohorts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_round_and_between_rounds_then_resume_bit_identical() {
    crash_and_resume(&[]).await;
}

/// The same with a server optimiser, whose moments must come back from the checkpoint: a
/// restart that lost them would take other steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedadam_resumes_bit_identical_from_its_checkpointed_moments() {
    let state = crash_and_resume(&["--strategy", "fedadam", "--param", "eta=0.05"]).await;
    let store = fedtune_server::Store::open(&state, false).unwrap();
    let last = store.last_committed().unwrap().unwrap();
    let (_, moments) =
        fedtune_server::store::read_checkpoint(&last.checkpoint, Some(last.digest)).unwrap();
    let names: Vec<String> = moments
        .expect("FedAdam's checkpoint holds its state")
        .tensors()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("m.")) && names.iter().any(|n| n.starts_with("v.")));
}

/// An uninterrupted run and one killed twice and restarted, with the `strategy` flags;
/// returns the interrupted run's state directory.
async fn crash_and_resume(strategy: &[&str]) -> std::path::PathBuf {
    // Uninterrupted reference run.
    let reference = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut srv = server(port, reference.path(), 0, strategy);
    wait_all(clients(port));
    assert!(srv.wait().unwrap().success());

    // Interrupted run, keeping only the newest checkpoints: kill mid-round 2 (some updates
    // in), then between rounds 4 and 5.
    let crashed = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut srv = server(port, crashed.path(), KEEP, strategy);
    let devices = clients(port);
    let training = v1::Phase::Training as i32;
    wait_for(port, "round 2 half done", |s| {
        s.round == 2 && s.phase == training && s.received >= 1 && s.received < K as u64
    })
    .await;
    srv.kill().unwrap();
    srv.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut srv = server(port, crashed.path(), KEEP, strategy);
    wait_for(port, "round 5 open with nothing received", |s| {
        s.round == 5 && s.phase == training && s.received == 0 && s.committed_rounds == 4
    })
    .await;
    srv.kill().unwrap();
    srv.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut srv = server(port, crashed.path(), KEEP, strategy);
    wait_all(devices);
    assert!(srv.wait().unwrap().success());

    let (model, cohorts) = final_model(crashed.path());
    let (want_model, want_cohorts) = final_model(reference.path());
    assert_eq!(
        cohorts, want_cohorts,
        "the restarted server drew other cohorts"
    );
    let drawn: std::collections::BTreeSet<_> = want_cohorts.iter().flatten().collect();
    assert_eq!(
        drawn.len(),
        CLIENTS,
        "every device drawn at some round: {want_cohorts:?}"
    );
    assert_eq!(model, want_model, "resumed run must match bit for bit");
    assert_eq!(
        checkpoint_rounds(reference.path()),
        (0..=ROUNDS).collect::<Vec<_>>()
    );
    assert_eq!(
        checkpoint_rounds(crashed.path()),
        (ROUNDS + 1 - KEEP..=ROUNDS).collect::<Vec<_>>(),
        "--keep-checkpoints {KEEP} leaves the newest {KEEP}"
    );
    crashed.keep()
}

/// Rounds whose checkpoint files are in a state directory, sorted.
fn checkpoint_rounds(state: &Path) -> Vec<u64> {
    let mut rounds: Vec<u64> = std::fs::read_dir(state.join("checkpoints"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            fedtune_server::store::checkpoint_round(&name).unwrap()
        })
        .collect();
    rounds.sort_unstable();
    rounds
}
