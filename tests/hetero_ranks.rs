//! Heterogeneous LoRA ranks in a running server over real loopback gRPC: a device that joins
//! with a lower rank is offered and downloads the global adapter truncated to it, and its
//! update is widened back before the round's rule sees it — zero update in the missing
//! components for FedAvg (HetLoRA), zero factors for FlexLoRA, whose committed adapter then
//! carries exactly the weighted mean of the products the devices trained. Ranks a server
//! cannot serve are refused at join.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{RawClient, quick_config, start_with, upload_messages};
use fedtune_proto::{Bundle, Tensor, v1};
use fedtune_server::strategy::{Params, build};
use fedtune_server::{Coordinator, SecAggSettings};

const IN: usize = 3;
const OUT: usize = 5;
const R: usize = 4;

/// A value for element `k` of a tensor, different for every `seed`.
fn v(seed: usize, k: usize) -> f32 {
    (((seed * 31 + k * 7 + 3) * 2_654_435_761usize) % 1000) as f32 / 500.0 - 1.0
}

/// A rank-`r` adapter of one OUT×IN module plus a bias.
fn adapter(r: usize, seed: usize) -> Bundle {
    let a: Vec<f32> = (0..r * IN).map(|k| v(seed, k)).collect();
    let b: Vec<f32> = (0..OUT * r).map(|k| v(seed + 100, k)).collect();
    Bundle::new(vec![
        Tensor::from_f32("m.lora_a", vec![r, IN], &a).unwrap(),
        Tensor::from_f32("m.lora_b", vec![OUT, r], &b).unwrap(),
        Tensor::from_f32("bias", vec![2], &[v(seed, 50), v(seed, 51)]).unwrap(),
    ])
    .unwrap()
}

fn values(b: &Bundle, name: &str) -> Vec<f32> {
    b.get(name).unwrap().to_f32().into_owned()
}

fn caps(rank: u32) -> Option<v1::Capabilities> {
    Some(v1::Capabilities {
        memory_mb: 1024,
        compute_tier: 0,
        threads: 1,
        lora_rank: rank,
    })
}

async fn committed(coord: &Coordinator) {
    for _ in 0..500 {
        if coord.status().committed_rounds >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the round was not committed");
}

/// (rank sent at join, rank trained, example count) of the three devices.
const DEVICES: [(u32, usize, u64); 3] = [(2, 2, 1), (4, 4, 3), (0, 4, 2)];

/// Runs one round of `strategy` with [`DEVICES`]; each uploads a delta at its own rank.
/// Returns the initial and the committed global adapters and the deltas.
async fn one_round(strategy: &str) -> (Bundle, Bundle, Vec<Bundle>) {
    let initial = adapter(R, 1);
    let strategy = build(strategy, &Params::default()).unwrap();
    let server = start_with(quick_config(1, 3, 3), initial.clone(), strategy).await;
    let mut clients = Vec::new();
    for (i, (sent, _, _)) in DEVICES.iter().enumerate() {
        let c = RawClient::join_with(&server.url, &format!("dev-{i}"), caps(*sent)).await;
        clients.push(c.unwrap());
    }
    let mut deltas = Vec::new();
    for (i, (c, (_, rank, n))) in clients.iter_mut().zip(DEVICES).enumerate() {
        let task = c.task().await;
        let got = c.download(&task).await;
        // The offered manifest and the download are the global's first `rank` components.
        let shape = |name: &str| got.get(name).unwrap().shape().to_vec();
        assert_eq!(shape("m.lora_a"), [rank, IN]);
        assert_eq!(shape("m.lora_b"), [OUT, rank]);
        assert_eq!(
            values(&got, "m.lora_a"),
            values(&initial, "m.lora_a")[..rank * IN]
        );
        let b0 = values(&initial, "m.lora_b");
        let b: Vec<f32> = (0..OUT)
            .flat_map(|o| b0[o * R..o * R + rank].to_vec())
            .collect();
        assert_eq!(values(&got, "m.lora_b"), b);
        // A full-rank update from a rank-2 device is refused: it is not its manifest.
        if rank < R {
            let wrong = upload_messages(&task, &adapter(R, 9), n);
            let e = c.send(wrong).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        }
        let delta = adapter(rank, 10 + i);
        c.send(upload_messages(&task, &delta, n)).await.unwrap();
        deltas.push(delta);
    }
    committed(&server.coord).await;
    (initial, server.coord.global().1, deltas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedavg_widens_lower_rank_updates_with_zeros() {
    let (initial, next, deltas) = one_round("fedavg").await;
    let total: f64 = DEVICES.iter().map(|d| d.2 as f64).sum();
    // Element (i, j) of a factor: the weighted sum of the deltas that hold it, over all weights.
    let mean = |name: &str, i: usize, j: usize| -> f64 {
        deltas
            .iter()
            .zip(DEVICES)
            .filter_map(|(d, (_, rank, n))| {
                let k = match name {
                    "m.lora_a" => (i < rank).then_some(i * IN + j)?,
                    _ => (j < rank).then_some(i * rank + j)?,
                };
                Some(n as f64 * f64::from(values(d, name)[k]))
            })
            .sum::<f64>()
            / total
    };
    for (name, rows, cols) in [("m.lora_a", R, IN), ("m.lora_b", OUT, R)] {
        let (got, init) = (values(&next, name), values(&initial, name));
        for i in 0..rows {
            for j in 0..cols {
                let want = (f64::from(init[i * cols + j]) + mean(name, i, j)) as f32;
                let k = i * cols + j;
                assert!(
                    (got[k] - want).abs() <= 1e-6,
                    "{name}[{i},{j}]: {} vs {want}",
                    got[k]
                );
            }
        }
    }
}

/// `b · a` for row-major `b` [OUT, r] and `a` [r, IN].
fn product(b: &[f32], a: &[f32], r: usize) -> Vec<f64> {
    let mut p = vec![0.0; OUT * IN];
    for o in 0..OUT {
        for c in 0..IN {
            p[o * IN + c] = (0..r)
                .map(|k| f64::from(b[o * r + k]) * f64::from(a[k * IN + c]))
                .sum();
        }
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flexlora_averages_the_products_the_devices_trained() {
    let (initial, next, deltas) = one_round("flexlora").await;
    let total: f64 = DEVICES.iter().map(|d| d.2 as f64).sum();
    let (a0, b0) = (values(&initial, "m.lora_a"), values(&initial, "m.lora_b"));
    let mut want = vec![0.0; OUT * IN];
    for (d, (_, rank, n)) in deltas.iter().zip(DEVICES) {
        // The device's factors: the global's first `rank` components plus its delta.
        let a: Vec<f32> = (0..rank * IN)
            .map(|k| a0[k] + values(d, "m.lora_a")[k])
            .collect();
        let b: Vec<f32> = (0..OUT * rank)
            .map(|k| b0[(k / rank) * R + k % rank] + values(d, "m.lora_b")[k])
            .collect();
        for (w, p) in want.iter_mut().zip(product(&b, &a, rank)) {
            *w += n as f64 / total * p;
        }
    }
    // The mean product has rank ≤ IN < R: the rank-R adapter carries it exactly.
    let got = product(&values(&next, "m.lora_b"), &values(&next, "m.lora_a"), R);
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "element {k}: {g} vs {w}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_the_server_cannot_serve_are_refused_at_join() {
    let strategy = build("fedavg", &Params::default()).unwrap();
    let server = start_with(quick_config(1, 2, 2), adapter(R, 1), strategy).await;
    let e = RawClient::join_with(&server.url, "big", caps(8))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("rank is 4"), "{}", e.message());

    // Secure aggregation sums equal-shaped updates.
    let config = fedtune_server::ServerConfig {
        secagg: Some(SecAggSettings::default()),
        ..quick_config(1, 3, 3)
    };
    let strategy = build("fedavg", &Params::default()).unwrap();
    let server = start_with(config, adapter(R, 1), strategy).await;
    let e = RawClient::join_with(&server.url, "small", caps(2))
        .await
        .err()
        .unwrap();
    assert!(
        e.message().contains("secure aggregation"),
        "{}",
        e.message()
    );
    assert!(
        RawClient::join_with(&server.url, "full", caps(4))
            .await
            .is_ok()
    );

    // A model without LoRA factors has no rank to truncate.
    let plain = Bundle::new(vec![Tensor::from_f32("w", vec![3], &[0.0; 3]).unwrap()]).unwrap();
    let strategy = build("fedavg", &Params::default()).unwrap();
    let server = start_with(quick_config(1, 2, 2), plain, strategy).await;
    let e = RawClient::join_with(&server.url, "lora", caps(2))
        .await
        .err()
        .unwrap();
    assert!(e.message().contains("no LoRA factors"), "{}", e.message());
}
