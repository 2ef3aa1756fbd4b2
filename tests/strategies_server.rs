//! Strategies in a running server over real loopback gRPC: a robust rule (FedMedian) commits
//! exactly the coordinate-wise median of the devices' updates, staging them on disk and
//! leaving nothing there; rules that need each update refuse secure aggregation and
//! differential privacy when the server opens; a server optimiser's settings are pinned to
//! the federation's state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{RawClient, quick_config, start_with, upload_messages};
use fedtune_proto::{Bundle, Tensor};
use fedtune_server::strategy::{Params, build};
use fedtune_server::{Coordinator, DpSettings, SecAggSettings, ServerError};

const K: usize = 5;
const N: usize = 3000;

fn bundle(values: &[f32]) -> Bundle {
    Bundle::new(vec![
        Tensor::from_f32("w", vec![values.len()], values).unwrap(),
    ])
    .unwrap()
}

async fn committed(coord: &Coordinator, rounds: u64) {
    for _ in 0..500 {
        if coord.status().committed_rounds >= rounds {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("round {rounds} was not committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedmedian_commits_the_coordinate_median_and_stages_nothing_after() {
    let initial = bundle(&(0..N).map(|i| (i as f32 * 0.01).cos()).collect::<Vec<_>>());
    let strategy = build("fedmedian", &Params::default()).unwrap();
    let server = start_with(quick_config(1, K, K), initial.clone(), strategy).await;
    let mut clients = Vec::new();
    for i in 0..K {
        clients.push(RawClient::join(&server.url, &format!("dev-{i}")).await);
    }
    // Four honest devices and one sending a huge update.
    let updates: Vec<Vec<f32>> = (0..K)
        .map(|k| {
            (0..N)
                .map(|i| {
                    if k == K - 1 {
                        1e3
                    } else {
                        ((i * (k + 2)) as f32 * 0.37).sin() * 1e-2
                    }
                })
                .collect()
        })
        .collect();
    for (c, u) in clients.iter_mut().zip(&updates) {
        let task = c.task().await;
        c.send(upload_messages(&task, &bundle(u), 10))
            .await
            .unwrap();
    }
    committed(&server.coord, 1).await;
    let (_, model) = server.coord.global();
    let got = model.tensors()[0].to_f32();
    let init = initial.tensors()[0].to_f32();
    for i in 0..N {
        let mut column: Vec<f64> = updates.iter().map(|u| f64::from(u[i])).collect();
        column.sort_by(f64::total_cmp);
        let want = (f64::from(init[i]) + column[K / 2]) as f32;
        assert_eq!(got[i], want, "element {i}");
    }
    let staging = server.dir.path().join("staging");
    assert!(staging.is_dir());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}

#[tokio::test]
async fn individual_update_rules_refuse_secagg_and_dp() {
    let initial = bundle(&[0.0; 8]);
    for name in ["fedmedian", "krum", "bulyan"] {
        let dir = tempfile::tempdir().unwrap();
        let secagg = fedtune_server::ServerConfig {
            secagg: Some(SecAggSettings::default()),
            ..quick_config(1, K, K)
        };
        let strategy = build(name, &Params::default()).unwrap();
        let err = Coordinator::open(secagg, dir.path(), initial.clone(), strategy).err();
        assert!(
            matches!(
                err,
                Some(ServerError::Config {
                    setting: "secagg",
                    ..
                })
            ),
            "{name}: {err:?}"
        );
        let dp = fedtune_server::ServerConfig {
            dp: Some(DpSettings {
                noise_multiplier: 1.0,
                ..DpSettings::default()
            }),
            ..quick_config(1, K, K)
        };
        let strategy = build(name, &Params::default()).unwrap();
        let err = Coordinator::open(dp, dir.path(), initial.clone(), strategy).err();
        assert!(
            matches!(err, Some(ServerError::Config { setting: "dp", .. })),
            "{name}: {err:?}"
        );
    }
    // A server optimiser runs with differential privacy (it takes the noised mean).
    let dir = tempfile::tempdir().unwrap();
    let dp = fedtune_server::ServerConfig {
        dp: Some(DpSettings {
            noise_multiplier: 1.0,
            ..DpSettings::default()
        }),
        ..quick_config(1, K, K)
    };
    let fedadam = build("fedadam", &Params::default()).unwrap();
    Coordinator::open(dp, dir.path(), initial, fedadam).unwrap();
}

#[tokio::test]
async fn a_restart_with_other_strategy_settings_is_refused() {
    let initial = bundle(&[0.0; 8]);
    let dir = tempfile::tempdir().unwrap();
    let open = |items: &[&str]| {
        let s = build("fedadam", &Params::parse(items).unwrap()).unwrap();
        Coordinator::open(quick_config(1, K, K), dir.path(), initial.clone(), s).map(|_| ())
    };
    open(&["eta=0.05"]).unwrap();
    open(&["eta=0.05"]).unwrap();
    let err = open(&["eta=0.5"]).unwrap_err().to_string();
    assert!(err.contains("eta=0.05") && err.contains("eta=0.5"), "{err}");
}
