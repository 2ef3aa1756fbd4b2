//! Differential privacy with secure aggregation, run by the real device runtime over loopback
//! gRPC (devices whose "training" adds a known shift): the securely summed clipped updates
//! decode to the plain sum up to quantization, central noise is added once after unmasking,
//! and with distributed noise the devices' shares are in the sum the server unmasks (its
//! variance is the devices' total, not the server's) and adaptive clipping's count rides the
//! masked words.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use fedtune::models::ShiftTrainer;
use fedtune::sim::{self, FaultRates, SimConfig, TransportKind};
use fedtune_proto::{Bundle, Compression, Tensor};
use fedtune_server::strategy::FedAvg;
use fedtune_server::{AdaptiveClip, DpSettings, SecAggSettings};

const PARAMS: usize = 20_000;
const K: usize = 5;

async fn federate(dp: DpSettings, min_commit: usize, shifts: &[f32]) -> (Vec<f64>, sim::SimReport) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::quick_config(1, K, K);
    server.min_commit = min_commit;
    server.secagg = Some(SecAggSettings::default());
    server.dp = Some(DpSettings {
        noise_seed: Some(3),
        ..dp
    });
    let cfg = SimConfig {
        server,
        clients: K,
        transport: TransportKind::Grpc,
        threads: 2,
        concurrency: K,
        faults: FaultRates::default(),
        connections: 0,
        state_dir: dir.path().to_path_buf(),
        compression: Compression::None,
    };
    let initial = Bundle::new(vec![
        Tensor::from_f32("w", vec![PARAMS], &vec![0.0; PARAMS]).unwrap(),
    ])
    .unwrap();
    let report = sim::run(&cfg, initial, Box::new(FedAvg), |i| ShiftTrainer {
        shift: shifts[i],
        examples: 10 + 90 * i as u64,
    })
    .await
    .unwrap();
    assert_eq!(report.version, 1);
    let delta = report.model.tensors()[0]
        .to_f32()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    (delta, report)
}

fn variance(v: &[f64]) -> f64 {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

fn assert_variance(got: f64, want: f64, what: &str) {
    let se = want * (2.0 / PARAMS as f64).sqrt();
    assert!(
        (got - want).abs() < 5.0 * se,
        "{what}: variance {got}, want {want}"
    );
}

/// Near-zero noise: each value is (Σ clipped shifts) / K to within one quantization level per
/// device; the device 10^3 over the norm adds exactly C / √d per value, and example counts do
/// not weigh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_sum_of_clipped_updates_is_exact() {
    let clip = 0.5;
    let shifts = [0.001, -0.002, 0.0005, 0.003, 10.0];
    let dp = DpSettings {
        noise_multiplier: 1e-9,
        clip,
        ..DpSettings::default()
    };
    let (delta, _) = federate(dp, K, &shifts).await;
    let clipped = clip / (PARAMS as f64).sqrt();
    let sum: f64 = shifts[..4].iter().map(|&s| f64::from(s)).sum::<f64>() + clipped;
    let want = sum / K as f64;
    let level = 2.0 / 65535.0;
    for (i, d) in delta.iter().enumerate() {
        assert!((d - want).abs() <= level, "value {i}: {d} vs {want}");
    }
    // Stochastic rounding (seeded from the OS) errs by at most `level` per value and device
    // with a standard deviation of at most level/2, independently: over the PARAMS values of
    // the K devices the mean errs by σ ≤ (level/2)·√K / K / √PARAMS. Six of those (1e-7, the
    // bound this had, was 2.4σ and failed about one run in sixty).
    let sigma = level / 2.0 * (K as f64).sqrt() / K as f64 / (PARAMS as f64).sqrt();
    let mean = delta.iter().sum::<f64>() / PARAMS as f64;
    assert!(
        (mean - want).abs() < 6.0 * sigma,
        "mean {mean} vs {want} (σ {sigma:e})"
    );
}

/// Zero updates, noise after unmasking: (zC/K)² per value, added once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_noise_is_added_once_after_unmasking() {
    let (z, clip) = (1.0, 0.5);
    let dp = DpSettings {
        noise_multiplier: z,
        clip,
        ..DpSettings::default()
    };
    let (delta, _) = federate(dp, K, &[0.0; K]).await;
    assert_variance(variance(&delta), (z * clip / K as f64).powi(2), "central");
}

/// Distributed noise: each of the 5 devices adds σ²/m with m = 4 (the fewest uploads the sum
/// may be unmasked with), so the sum the server unmasks carries 5/4·σ²: the noise is the
/// devices' (the server's own would give 1·σ², both 9/4·σ²). The within words, noised by the
/// devices too, move the clip norm down: every update was within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_noise_is_in_the_sum_the_server_unmasks() {
    let (z, clip) = (1.0, 0.5);
    let dp = DpSettings {
        noise_multiplier: z,
        clip,
        distributed: true,
        adaptive: Some(AdaptiveClip::default()),
        ..DpSettings::default()
    };
    let (delta, report) = federate(dp, 4, &[0.0; K]).await;
    let want = 1.25 * (z * clip / K as f64).powi(2);
    assert_variance(variance(&delta), want, "distributed");
    let next = report.coordinator.status().dp.unwrap().clip;
    // Fraction within: 1 plus noise of σ_b/K = 0.05; C·e^(−0.2(fraction − 0.5)).
    let (lo, hi) = (clip * (-0.2f64 * 0.7).exp(), clip * (-0.2f64 * 0.3).exp());
    assert!(next > lo && next < hi, "clip {next} not in ({lo}, {hi})");
}
