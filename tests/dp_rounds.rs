//! Differential privacy on the server over real loopback gRPC, with hand-driven devices whose
//! updates are known: every update counts once and is clipped (a huge one moves the sum by at
//! most C), the noise has the stated variance, ε is the accountant's and a budget stops the
//! federation cleanly (and stays spent across a restart), and the clip norm adapts from the
//! count of updates within it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{RawClient, quick_config, start, start_in, upload_messages};
use fedtune_privacy::{RdpAccountant, Sampling};
use fedtune_proto::{Bundle, Tensor, v1};
use fedtune_server::strategy::FedAvg;
use fedtune_server::{AdaptiveClip, Coordinator, DpSettings, ServerConfig};

const PARAMS: usize = 20_000;
const K: usize = 4;

fn bundle(values: &[f32]) -> Bundle {
    Bundle::new(vec![
        Tensor::from_f32("w", vec![values.len()], values).unwrap(),
    ])
    .unwrap()
}

fn config(rounds: u64, dp: DpSettings) -> ServerConfig {
    ServerConfig {
        dp: Some(DpSettings {
            noise_seed: Some(9),
            ..dp
        }),
        ..quick_config(rounds, K, K)
    }
}

async fn devices(url: &str) -> Vec<RawClient> {
    let mut out = Vec::new();
    for i in 0..K {
        out.push(RawClient::join(url, &format!("dev-{i}")).await);
    }
    out
}

/// One round: each device uploads its update, claiming `within` the clip norm.
async fn round(clients: &mut [RawClient], updates: &[Vec<f32>], within: &[bool]) {
    for (i, c) in clients.iter_mut().enumerate() {
        let task = c.task().await;
        let dp = task
            .dp
            .expect("a private round's task carries its DP setup");
        assert!(dp.clip > 0.0);
        let mut messages = upload_messages(&task, &bundle(&updates[i]), 1 + 100 * i as u64);
        if let Some(v1::upload_message::Kind::Header(h)) = &mut messages[0].kind {
            h.within_clip = within[i];
        }
        c.send(messages).await.unwrap();
    }
}

async fn committed(coord: &Coordinator, rounds: u64) {
    for _ in 0..400 {
        if coord.status().committed_rounds >= rounds {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("round {rounds} was not committed");
}

fn delta(coord: &Coordinator, initial: &Bundle) -> Vec<f64> {
    let (_, model) = coord.global();
    let (m, i) = (model.tensors()[0].to_f32(), initial.tensors()[0].to_f32());
    m.iter()
        .zip(i.iter())
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect()
}

fn variance(v: &[f64]) -> f64 {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

/// Devices' example counts do not weigh (every update counts once), and a device whose
/// update is 10^4 times the clip norm moves the sum by exactly C in its own direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_update_moves_the_sum_by_at_most_the_clip_norm() {
    let initial = bundle(&vec![0.5; PARAMS]);
    let clip = 0.5;
    let dp = DpSettings {
        noise_multiplier: 1e-9,
        clip,
        ..DpSettings::default()
    };
    let server = start(config(1, dp), initial.clone()).await;
    let mut clients = devices(&server.url).await;
    let small = |k: usize| -> Vec<f32> {
        (0..PARAMS)
            .map(|i| ((i * (k + 3)) as f32).sin() * 1e-4)
            .collect()
    };
    let huge: Vec<f32> = (0..PARAMS)
        .map(|i| if i % 2 == 0 { 70.0 } else { -70.0 })
        .collect();
    let updates = vec![small(0), small(1), small(2), huge.clone()];
    round(&mut clients, &updates, &[true; K]).await;
    committed(&server.coord, 1).await;
    let d = delta(&server.coord, &initial);
    let huge_norm = (PARAMS as f64).sqrt() * 70.0;
    for i in 0..PARAMS {
        let smalls: f64 = (0..3).map(|k| f64::from(updates[k][i])).sum();
        let clipped = f64::from(huge[i]) * clip / huge_norm;
        let want = (smalls + clipped) / K as f64;
        assert!((d[i] - want).abs() < 2e-6, "value {i}: {} vs {want}", d[i]);
    }
    let contribution: f64 = d
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let smalls: f64 = (0..3).map(|k| f64::from(updates[k][i])).sum();
            (x * K as f64 - smalls).powi(2)
        })
        .sum::<f64>()
        .sqrt();
    assert!(
        contribution <= clip * 1.000_01,
        "moved the sum by {contribution}"
    );
    assert!(contribution > clip * 0.999, "{contribution}");
}

/// All-zero updates: the model moves by the noise alone, N(0, (zC/K)²) per value, and ε is
/// what the accountant gives for one fixed-size round at q = 1 (δ = 1/N^1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noise_has_the_stated_variance_and_epsilon_is_the_accountants() {
    let initial = bundle(&vec![0.0; PARAMS]);
    let (z, clip) = (1.5, 0.4);
    let dp = DpSettings {
        noise_multiplier: z,
        clip,
        ..DpSettings::default()
    };
    let server = start(config(1, dp), initial.clone()).await;
    let mut clients = devices(&server.url).await;
    round(&mut clients, &vec![vec![0.0; PARAMS]; K], &[true; K]).await;
    committed(&server.coord, 1).await;
    let d = delta(&server.coord, &initial);
    let want = (z * clip / K as f64).powi(2);
    let se = want * (2.0 / PARAMS as f64).sqrt();
    let got = variance(&d);
    assert!((got - want).abs() < 5.0 * se, "variance {got}, want {want}");
    let status = server
        .coord
        .status()
        .dp
        .expect("a private server reports its privacy");
    let delta_want = 1.0 / (K as f64).powf(1.1);
    assert!(
        (status.delta - delta_want).abs() < 1e-15,
        "{}",
        status.delta
    );
    let mut acc = RdpAccountant::default();
    acc.compose(Sampling::Fixed, 1.0, z / 2.0, 1).unwrap();
    let eps = acc.epsilon(delta_want).unwrap().0;
    assert!(
        (status.epsilon - eps).abs() < 1e-9 * eps,
        "{} vs {eps}",
        status.epsilon
    );
    let recorded = server
        .coord
        .with_store(|s| s.metric_total(1, "dp_epsilon"))
        .unwrap();
    assert_eq!(recorded, (1, status.epsilon));
}

/// With a budget between ε after 3 and after 4 rounds the server commits 3 of its 10 rounds
/// and finishes; reopened, it has spent the same and opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_stops_the_federation_and_stays_spent_across_a_restart() {
    let initial = bundle(&vec![0.0; 100]);
    let (z, delta) = (4.0, 1e-5);
    let eps_after = |t: u64| {
        let mut acc = RdpAccountant::default();
        acc.compose(Sampling::Fixed, 1.0, z / 2.0, t).unwrap();
        acc.epsilon(delta).unwrap().0
    };
    let max = (eps_after(3) + eps_after(4)) / 2.0;
    let dp = DpSettings {
        noise_multiplier: z,
        clip: 1.0,
        delta: Some(delta),
        max_epsilon: Some(max),
        ..DpSettings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let server = start_in(config(10, dp.clone()), initial.clone(), dir).await;
    let mut clients = devices(&server.url).await;
    for r in 1..=3 {
        round(&mut clients, &vec![vec![0.01; 100]; K], &[true; K]).await;
        committed(&server.coord, r).await;
    }
    let status = server.coord.status();
    assert_eq!(status.phase, v1::Phase::Finished as i32, "{status:?}");
    assert_eq!(status.committed_rounds, 3);
    let spent = status.dp.unwrap().epsilon;
    assert!((spent - eps_after(3)).abs() < 1e-9 * spent, "{spent}");
    assert!(spent <= max);
    let per_round: Vec<f64> = (1..=3)
        .map(|r| {
            server
                .coord
                .with_store(|s| s.metric_total(r, "dp_epsilon"))
                .unwrap()
                .1
        })
        .collect();
    for (t, e) in per_round.iter().enumerate() {
        assert!(
            (e - eps_after(t as u64 + 1)).abs() < 1e-9 * e,
            "round {}: {e}",
            t + 1
        );
    }
    // Stop the server (keeping its state) and open the state again.
    let keep = tempfile::tempdir().unwrap();
    drop(clients);
    let copy = keep.path().join("state");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    copy_dir(&path.join("checkpoints"), &copy.join("checkpoints"));
    drop(server);
    let reopened = Coordinator::open(config(10, dp), &copy, initial, Box::new(FedAvg)).unwrap();
    let status = reopened.status();
    assert_eq!(status.phase, v1::Phase::Finished as i32);
    assert!((status.dp.unwrap().epsilon - spent).abs() < 1e-12 * spent);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    if !from.exists() {
        return;
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Adaptive clipping with (almost) no count noise: all updates within → C shrinks by
/// e^(−η(1 − γ)); none within → it grows by e^(ηγ). A device claiming "within" with an update
/// over the norm is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clip_norm_follows_the_count_within_it() {
    let initial = bundle(&vec![0.0; 100]);
    let dp = DpSettings {
        noise_multiplier: 1e-9,
        clip: 1.0,
        adaptive: Some(AdaptiveClip {
            count_stddev: Some(1e-12),
            ..AdaptiveClip::default()
        }),
        ..DpSettings::default()
    };
    let server = start(config(2, dp), initial).await;
    let mut clients = devices(&server.url).await;
    round(&mut clients, &vec![vec![0.001; 100]; K], &[true; K]).await;
    committed(&server.coord, 1).await;
    // Round 2: every update over the norm, one device lying about it.
    round(
        &mut clients,
        &vec![vec![5.0; 100]; K],
        &[true, false, false, false],
    )
    .await;
    committed(&server.coord, 2).await;
    let clip = |r| {
        server
            .coord
            .with_store(|s| s.metric_total(r, "dp_clip"))
            .unwrap()
            .1
    };
    let c1 = (-0.2f64 * 0.5).exp();
    assert_eq!(clip(1), 1.0);
    assert!((clip(2) - c1).abs() < 1e-9, "{}", clip(2));
    let next = server.coord.status().dp.unwrap().clip;
    assert!((next - c1 * 0.1f64.exp()).abs() < 1e-9, "{next}");
}
