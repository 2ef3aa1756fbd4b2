//! Secure aggregation over real loopback gRPC: hand-driven devices (the protocol's own device
//! side, with known updates) drop out at each stage, and the server's committed model must be
//! exactly what the plain sum of the survivors' quantized updates gives; below the threshold
//! the round is abandoned and nothing of it is stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{RawClient, quick_config, start};
use fedtune_client::runtime::{advert_from_wire, inbox_from_wire, reveals_to_wire, shares_to_wire};
use fedtune_proto::{Bundle, EncodedBundle, Tensor, v1};
use fedtune_secagg::protocol::{Device, Params};
use fedtune_secagg::quantize::Quantizer;
use fedtune_server::strategy::{Aggregate, FedAvg, Strategy, StrategyError};
use fedtune_server::{SecAggSettings, ServerConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tonic::Status;
use v1::sec_agg_request::Step;
use v1::sec_agg_response::Outcome;

const PARAMS: usize = 1000;
const DEVICES: usize = 12;

/// Where a device stops.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Never,
    AfterAdvertising,
    AfterSharing,
    MidUpload,
    DuringUnmasking,
}

fn initial() -> Bundle {
    let w: Vec<f32> = (0..PARAMS).map(|i| (i as f32).sin()).collect();
    Bundle::new(vec![Tensor::from_f32("w", vec![PARAMS], &w).unwrap()]).unwrap()
}

fn config() -> ServerConfig {
    ServerConfig {
        // Sharing stops and mid-upload drops are only seen at the upload deadline.
        round_timeout: Duration::from_millis(2500),
        min_commit: 6,
        secagg: Some(SecAggSettings {
            stage_timeout: Duration::from_millis(400),
            ..SecAggSettings::default()
        }),
        ..quick_config(1, DEVICES, DEVICES)
    }
}

/// Sends one step until the server answers it.
async fn step(c: &mut RawClient, task: &v1::Task, s: Step) -> Result<Outcome, Status> {
    loop {
        let req = c.authed(v1::SecAggRequest {
            task_id: task.task_id.clone(),
            round: task.round,
            step: Some(s.clone()),
        });
        match c.rpc.sec_agg(req).await?.into_inner().outcome {
            Some(Outcome::RetryAfterMs(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Some(o) => return Ok(o),
            None => panic!("an answer without an outcome"),
        }
    }
}

/// One device's run: its encoded update when it made it into the sum.
async fn device(url: String, i: usize, stop: Stop) -> Option<(u32, Vec<u32>)> {
    let mut c = RawClient::join(&url, &format!("dev-{i:02}")).await;
    let task = c.task().await;
    let setup = task
        .secagg
        .clone()
        .expect("a secure round's task carries its setup");
    let params = Params {
        threshold: setup.threshold as usize,
        context: setup.context.to_vec(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
    let mut dev = Device::new(setup.index, setup.neighbours.clone(), params, &mut rng);
    let a = dev.advert();
    let keys = v1::SecAggKeys {
        c_public: a.c_public.to_vec().into(),
        s_public: a.s_public.to_vec().into(),
        ..Default::default()
    };
    let Outcome::Adverts(adverts) = step(&mut c, &task, Step::Advertise(keys)).await.unwrap()
    else {
        panic!("adverts expected");
    };
    if stop == Stop::AfterAdvertising {
        return None;
    }
    let adverts: Vec<_> = adverts
        .adverts
        .iter()
        .map(|a| advert_from_wire(a).unwrap())
        .collect();
    let shares = shares_to_wire(dev.share(&adverts, &mut rng).unwrap());
    let Outcome::Inbox(inbox) = step(&mut c, &task, Step::Share(shares)).await.unwrap() else {
        panic!("inbox expected");
    };
    if stop == Stop::AfterSharing {
        return None;
    }
    let inbox = inbox_from_wire(&inbox);
    let q = Quantizer {
        clip: setup.clip,
        bits: setup.bits,
    };
    let update: Vec<f32> = (0..PARAMS)
        .map(|j| 0.01 * ((i * 7 + j) as f32).sin())
        .collect();
    let weight = 3 + i as u32;
    let encoded = q.encode(&update, weight, &mut rng);
    let masked = dev.mask(&inbox, &encoded).unwrap();
    let bundle = Bundle::new(vec![
        Tensor::from_u32_vec("secagg.masked", vec![PARAMS + 1], masked).unwrap(),
    ])
    .unwrap();
    let enc = EncodedBundle::encode(&bundle, fedtune_proto::Compression::None).unwrap();
    let mut messages = common::upload_in_chunks(&task, &enc, u64::from(weight), 1024);
    if stop == Stop::MidUpload {
        messages.truncate(3); // the header and two of five chunks; no digest
        assert!(
            c.send(messages).await.is_err(),
            "a broken upload is not taken"
        );
        return None;
    }
    c.send(messages).await.unwrap();
    let Outcome::Unmask(request) = step(&mut c, &task, Step::Unmask(v1::SecAggPoll {}))
        .await
        .unwrap()
    else {
        panic!("unmask request expected");
    };
    let survivor = Some((setup.index, encoded));
    if stop == Stop::DuringUnmasking {
        return survivor;
    }
    let reveals = reveals_to_wire(dev.unmask(&request.survivors, &request.dropped).unwrap());
    // The last reveal may commit the round: a refusal after that is fine.
    let _ = step(&mut c, &task, Step::Reveal(reveals)).await;
    survivor
}

/// Runs one round with the first `dropped` devices (by their number in the round) stopping at
/// `stop`; returns the server and the survivors' encodings.
async fn round(stop: Stop, dropped: usize) -> (common::TestServer, Vec<(u32, Vec<u32>)>) {
    let server = start(config(), initial()).await;
    let runs: Vec<_> = (0..DEVICES)
        .map(|i| {
            let url = server.url.clone();
            tokio::spawn(async move {
                // Devices are numbered in client-id order, so device i is number i.
                let s = if i < dropped { stop } else { Stop::Never };
                device(url, i, s).await
            })
        })
        .collect();
    let mut survivors = Vec::new();
    for r in runs {
        survivors.extend(r.await.unwrap());
    }
    (server, survivors)
}

/// The model the plain sum of `survivors`' encodings gives.
fn expected(survivors: &[(u32, Vec<u32>)]) -> Bundle {
    let mut sum = vec![0u32; PARAMS + 1];
    for (_, e) in survivors {
        for (s, v) in sum.iter_mut().zip(e) {
            *s = s.wrapping_add(*v);
        }
    }
    let q = Quantizer {
        clip: 1.0,
        bits: 16,
    };
    let (mean, total) = q.decode(&sum);
    let agg = Aggregate {
        mean: vec![mean.into_iter().map(f64::from).collect()],
        total_weight: f64::from(total),
        count: survivors.len(),
    };
    FedAvg.apply(&initial(), agg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_sum_is_the_plain_sum_whoever_drops_at_any_stage() {
    let stages = [
        Stop::AfterAdvertising,
        Stop::AfterSharing,
        Stop::MidUpload,
        Stop::DuringUnmasking,
    ];
    // 0%, 10% and 33% of the cohort of 12.
    let mut cases = vec![(Stop::Never, 0)];
    for s in stages {
        cases.push((s, 1));
        cases.push((s, 4));
    }
    let runs: Vec<_> = cases
        .iter()
        .map(|&(s, d)| tokio::spawn(round(s, d)))
        .collect();
    for (r, (stop, dropped)) in runs.into_iter().zip(cases) {
        let (server, survivors) = r.await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), server.coord.finished())
            .await
            .unwrap_or_else(|_| panic!("{stop:?} x{dropped}: the round never committed"));
        let want = DEVICES
            - if stop == Stop::DuringUnmasking {
                0
            } else {
                dropped
            };
        assert_eq!(survivors.len(), want, "{stop:?} x{dropped}");
        let (version, model) = server.coord.global();
        assert_eq!(version, 1);
        assert_eq!(
            model,
            expected(&survivors),
            "{stop:?} x{dropped}: the unmasked sum differs from the plain sum"
        );
        assert_ne!(model, initial());
        let contributors = server.coord.with_store(|s| s.contributors(1)).unwrap();
        assert_eq!(contributors.len(), want, "{stop:?} x{dropped}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_threshold_the_round_is_abandoned_and_nothing_is_stored() {
    // Seven of twelve never reveal: five reveals, threshold six.
    let (server, survivors) = round(Stop::DuringUnmasking, 7).await;
    assert_eq!(survivors.len(), DEVICES);
    // The abandoned attempt is followed by a new one, with a new context (fresh keys).
    let mut c = RawClient::join(&server.url, "dev-00").await;
    let task = tokio::time::timeout(Duration::from_secs(10), c.task())
        .await
        .expect("a new attempt opens");
    assert_eq!(task.round, 1);
    assert!(task.task_id.contains("-a1-"), "{}", task.task_id);
    assert_eq!(server.coord.global(), (0, initial()));
    let rounds = server.coord.with_store(|s| s.rounds()).unwrap();
    assert_eq!(rounds, vec![(0, 0)], "only the initial model is stored");
    let checkpoints: Vec<_> = std::fs::read_dir(server.dir.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    assert!(
        server
            .coord
            .with_store(|s| s.contributors(1))
            .unwrap()
            .is_empty()
    );
}

/// A rule that must see each update on its own.
struct Robust;

impl Strategy for Robust {
    fn name(&self) -> &'static str {
        "robust"
    }
    fn needs_individual_updates(&self) -> bool {
        true
    }
    fn apply(&mut self, g: &Bundle, _: Aggregate) -> Result<Bundle, StrategyError> {
        Ok(g.clone())
    }
}

#[tokio::test]
async fn a_strategy_that_needs_individual_updates_refuses_secure_aggregation() {
    let dir = tempfile::tempdir().unwrap();
    let err = fedtune_server::Coordinator::open(config(), dir.path(), initial(), Box::new(Robust))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secagg") && err.contains("`robust` needs each update"),
        "{err}"
    );
    let plain = ServerConfig {
        secagg: None,
        ..config()
    };
    fedtune_server::Coordinator::open(plain, dir.path(), initial(), Box::new(Robust)).unwrap();
}

/// The real device runtime, through injected dropouts (before the task, after sharing,
/// mid-upload), over gRPC: every round commits and the federation learns as a plain one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_runtime_aggregates_securely_through_dropouts() {
    use fedtune::sim::{self, FaultRates, SimConfig, TransportKind};
    use fedtune_client::trainer::{LinRegData, LinRegTrainer, linreg_model};
    let run = |secagg: bool| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut server = common::quick_config(4, 16, 16);
        server.min_commit = 8;
        server.training.learning_rate = 0.01;
        server.round_timeout = Duration::from_millis(1500);
        server.secagg = secagg.then(|| SecAggSettings {
            stage_timeout: Duration::from_millis(300),
            clip: 4.0,
            ..SecAggSettings::default()
        });
        let cfg = SimConfig {
            server,
            clients: 16,
            transport: TransportKind::Grpc,
            threads: 2,
            concurrency: 16,
            faults: FaultRates {
                drop_before_download: 0.05,
                drop_during_download: 0.05,
                drop_during_upload: 0.05,
                ..FaultRates::default()
            },
            connections: 0,
            state_dir: dir.path().to_path_buf(),
            compression: fedtune_proto::Compression::None,
        };
        let data = |i: usize| LinRegData::synthetic(5, i as u64, 48, 8);
        let report = sim::run(&cfg, linreg_model(8), Box::new(FedAvg), |i| {
            LinRegTrainer::new(data(i), sim::trainer_seed(5, i))
        })
        .await
        .unwrap();
        let pooled: Vec<_> = (0..16).map(data).collect();
        let loss = pooled
            .iter()
            .map(|d| d.mse(&report.model).unwrap())
            .sum::<f64>()
            / 16.0;
        (report, loss)
    };
    let (plain, plain_loss) = run(false).await;
    let (secure, secure_loss) = run(true).await;
    assert_eq!(secure.version, 4);
    assert!(secure.dropouts > 0, "faults were injected");
    let start = {
        let pooled: Vec<_> = (0..16)
            .map(|i| LinRegData::synthetic(5, i as u64, 48, 8))
            .collect();
        pooled
            .iter()
            .map(|d| d.mse(&linreg_model(8)).unwrap())
            .sum::<f64>()
            / 16.0
    };
    assert!(secure_loss < 0.3 * start, "{start} -> {secure_loss}");
    assert!(
        (secure_loss - plain_loss).abs() < 0.1 * plain_loss,
        "secure {secure_loss} vs plain {plain_loss}"
    );
    let accepted: u64 = secure.clients.iter().map(|c| c.accepted).sum();
    assert!(accepted >= 4 * 8, "{accepted} masked updates accepted");
    let _ = plain;
}

/// A `fedtune server --secagg` killed while devices hold their tasks restarts the round as a
/// new attempt: new task ids, a new key-derivation context, and the old tasks refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_protocol_never_reopens_the_same_attempt() {
    let state = tempfile::tempdir().unwrap();
    let spawn = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fedtune"));
        cmd.args(["server", "--listen", "127.0.0.1:0", "--model", "linreg:4"])
            .args(["--rounds", "1", "--clients-per-round", "3"])
            .args([
                "--over-selection",
                "1",
                "--min-clients",
                "3",
                "--min-commit",
                "3",
            ])
            .args(["--log", "warn", "--secagg"])
            .arg("--state")
            .arg(state.path())
            .stdout(std::process::Stdio::piped());
        let mut child = Killed(cmd.spawn().unwrap());
        let url = common::listening_url(child.0.stdout.take().unwrap());
        (child, url)
    };
    let tasks = |url: String| async move {
        let joins: Vec<_> = (0..3)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move {
                    let mut c = RawClient::join(&url, &format!("dev-{i}")).await;
                    let t = c.task().await;
                    (c, t)
                })
            })
            .collect();
        let mut out = Vec::new();
        for j in joins {
            out.push(j.await.unwrap());
        }
        out
    };
    let (first, url) = spawn();
    let before = tasks(url).await;
    for (_, t) in &before {
        assert!(t.task_id.contains("-r1-a0-"), "{}", t.task_id);
    }
    drop(first);

    let (_second, url) = spawn();
    let mut after = tasks(url).await;
    for ((_, old), (_, new)) in before.iter().zip(&after) {
        assert!(new.task_id.contains("-r1-a1-"), "{}", new.task_id);
        let (a, b) = (old.secagg.as_ref().unwrap(), new.secagg.as_ref().unwrap());
        assert_ne!(a.context, b.context, "a new attempt derives new keys");
    }
    // A task of the killed attempt takes no part in the new one.
    let (c, _) = &mut after[0];
    let stale = step(c, &before[0].1, Step::Unmask(v1::SecAggPoll {}))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
}

/// A server process killed when dropped (also when a test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A device that has advertised keys is not handed its task again (it would come with new
/// keys); one that has not, is, while advertising is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_offered_again_only_before_its_keys_are_in() {
    let server = start(
        ServerConfig {
            secagg: Some(SecAggSettings::default()),
            ..quick_config(1, 3, 3)
        },
        initial(),
    )
    .await;
    let joins: Vec<_> = (0..3)
        .map(|i| {
            let url = server.url.clone();
            tokio::spawn(async move {
                let mut c = RawClient::join(&url, &format!("dev-{i}")).await;
                let t = c.task().await;
                (c, t)
            })
        })
        .collect();
    let mut devices = Vec::new();
    for j in joins {
        devices.push(j.await.unwrap());
    }
    let (c0, t0) = &mut devices[0];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let setup = t0.secagg.clone().unwrap();
    let params = Params {
        threshold: setup.threshold as usize,
        context: setup.context.to_vec(),
    };
    let a = Device::new(setup.index, setup.neighbours.clone(), params, &mut rng).advert();
    let keys = v1::SecAggKeys {
        c_public: a.c_public.to_vec().into(),
        s_public: a.s_public.to_vec().into(),
        ..Default::default()
    };
    let req = c0.authed(v1::SecAggRequest {
        task_id: t0.task_id.clone(),
        round: t0.round,
        step: Some(Step::Advertise(keys)),
    });
    let held = c0.rpc.sec_agg(req).await.unwrap().into_inner();
    assert!(
        matches!(held.outcome, Some(Outcome::RetryAfterMs(_))),
        "{held:?}"
    );
    let again = c0.try_check_in().await.unwrap();
    assert!(
        matches!(
            again.outcome,
            Some(v1::check_in_response::Outcome::RetryAfterMs(_))
        ),
        "{again:?}"
    );
    let (c1, t1) = &mut devices[1];
    let same = c1.try_check_in().await.unwrap();
    let Some(v1::check_in_response::Outcome::Task(t)) = same.outcome else {
        panic!("{same:?}");
    };
    assert_eq!(&t.task_id, &t1.task_id);
}
