//! Whole federations over real loopback gRPC: convergence, dropouts, large updates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use fedtune::models::{ShiftTrainer, mean, sin_model};
use fedtune::sim::{self, FaultRates, SimConfig, TransportKind};
use fedtune_client::trainer::{LinRegData, LinRegTrainer, linreg_model};
use fedtune_proto::{Bundle, Compression, Tensor, v1};
use fedtune_server::strategy::FedAvg;

fn sim_config(clients: usize, rounds: u64, k: usize, dir: &std::path::Path) -> SimConfig {
    let mut server = common::quick_config(rounds, k, clients);
    server.training.learning_rate = 0.01;
    server.training.local_steps = 10;
    SimConfig {
        server,
        clients,
        transport: TransportKind::Grpc,
        threads: 2,
        concurrency: 8,
        faults: FaultRates::default(),
        connections: 0,
        state_dir: dir.to_path_buf(),
        compression: Compression::None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_converge_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(20, 8, 20, dir.path());
    let data = |i: usize| LinRegData::synthetic(5, i as u64, 48, 8);
    let report = sim::run(&cfg, linreg_model(8), Box::new(FedAvg), |i| {
        LinRegTrainer::new(data(i), sim::trainer_seed(5, i))
    })
    .await
    .unwrap();
    assert_eq!(report.version, 8);
    let pooled: Vec<_> = (0..20).map(data).collect();
    let loss = |m: &Bundle| pooled.iter().map(|d| d.mse(m).unwrap()).sum::<f64>() / 20.0;
    let (before, after) = (loss(&linreg_model(8)), loss(&report.model));
    assert!(
        after < 0.2 * before,
        "loss should fall: {before} -> {after}"
    );
    // Every round counted all 20 clients exactly once, and the round-by-round loss fell.
    let rounds = report.coordinator.with_store(|s| s.rounds()).unwrap();
    assert_eq!(
        rounds.iter().filter(|(r, n)| *r > 0 && *n == 20).count(),
        8,
        "{rounds:?}"
    );
    let curve = common::round_curve(&report.coordinator, "train_loss_before", 8);
    assert!(curve[7] < 0.3 * curve[0], "round losses {curve:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropouts_and_stragglers_do_not_stop_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sim_config(30, 5, 10, dir.path());
    cfg.server.over_selection = 2.0;
    cfg.server.min_commit = 5;
    cfg.server.round_timeout = Duration::from_secs(2);
    cfg.faults = FaultRates {
        drop_before_download: 0.1,
        drop_during_download: 0.1,
        drop_during_upload: 0.1,
        straggler: 0.1,
        straggler_delay: Duration::from_secs(3),
    };
    let data = |i: usize| LinRegData::synthetic(2, i as u64, 32, 4);
    let report = sim::run(&cfg, linreg_model(4), Box::new(FedAvg), |i| {
        LinRegTrainer::new(data(i), i as u64)
    })
    .await
    .unwrap();
    assert_eq!(report.version, 5);
    assert!(
        report.dropouts > 0,
        "the fault plan should have dropped someone"
    );
    let plan = sim::SeededFaults {
        rates: cfg.faults.clone(),
        seed: cfg.server.seed,
    };
    // The stragglers really arrived late (3 s after their task, past the 2 s deadline, by
    // which their round had committed, or the federation had finished) and were refused.
    let mut late = 0;
    for c in &report.clients {
        for (round, reason) in &c.refused {
            let slowed = sim::Faults::plan(&plan, &c.client_id, *round)
                .delay
                .is_some();
            if reason.starts_with("fault injection") {
                continue; // a dropout, counted in report.dropouts
            }
            // Over-selected devices may be refused too: the round had its K updates.
            assert!(
                reason.starts_with("stale upload") || reason.starts_with("late upload"),
                "{} in round {round}: {reason}",
                c.client_id
            );
            late += usize::from(slowed);
        }
    }
    assert!(late > 0, "no straggler arrived late");
    // Nobody who dropped or straggled in a round is among that round's contributors.
    for round in 1..=5u64 {
        let contributors = report
            .coordinator
            .with_store(|s| s.contributors(round))
            .unwrap();
        assert!(contributors.len() >= 5);
        for c in &contributors {
            let p = sim::Faults::plan(&plan, c, round);
            assert!(
                !p.drop_before_download
                    && p.drop_during_download.is_none()
                    && p.drop_during_upload.is_none()
                    && p.delay.is_none(),
                "{c} dropped or straggled in round {round} yet was counted"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_upload_of_a_dropped_client_is_never_counted() {
    // 300k params = 1.2 MB: two chunks, so the client can vanish between them.
    let n = 300_000;
    let initial =
        Bundle::new(vec![Tensor::from_f32("w", vec![n], &vec![1.0; n]).unwrap()]).unwrap();
    let mut config = common::quick_config(1, 2, 3);
    config.over_selection = 1.5;
    let server = common::start(config, initial).await;
    let mut clients = Vec::new();
    for id in ["a", "b", "c"] {
        clients.push(common::RawClient::join(&server.url, id).await);
    }
    let mut tasks = Vec::new();
    for c in &mut clients {
        tasks.push(c.task().await);
    }
    let delta =
        |v: f32| Bundle::new(vec![Tensor::from_f32("w", vec![n], &vec![v; n]).unwrap()]).unwrap();

    // Client a sends its header and first chunk, then its connection goes away.
    let msgs = common::upload_messages(&tasks[0], &delta(100.0), 1000);
    let partial: Vec<_> = msgs.into_iter().take(2).collect();
    let stream =
        futures::StreamExt::chain(futures::stream::iter(partial), futures::stream::pending());
    let req = clients[0].authed(stream);
    let mut rpc = clients[0].rpc.clone();
    let dropped = tokio::time::timeout(Duration::from_millis(300), rpc.upload(req)).await;
    assert!(
        dropped.is_err(),
        "the upload should still be pending when the client vanishes"
    );
    drop(rpc);
    drop(clients.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.coord.status().received,
        0,
        "a partial upload is not counted"
    );

    // The others complete the round without waiting for a.
    let (tb, tc) = (tasks[1].clone(), tasks[2].clone());
    clients[0]
        .send(common::upload_messages(&tb, &delta(1.0), 1))
        .await
        .unwrap();
    clients[1]
        .send(common::upload_messages(&tc, &delta(3.0), 3))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.coord.finished())
        .await
        .unwrap();
    let (version, model) = server.coord.global();
    assert_eq!(version, 1);
    // 1 + (1·1 + 3·3)/4 = 3.5 everywhere: a's 100.0 left no trace.
    assert!(model.tensors()[0].to_f32().iter().all(|&v| v == 3.5));
    assert_eq!(
        server.coord.with_store(|s| s.contributors(1)).unwrap(),
        vec!["b", "c"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_update_travels_in_chunks() {
    let params = 16 * 1024 * 1024; // 64 MiB of f32
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sim_config(1, 1, 1, dir.path());
    cfg.concurrency = 1;
    let initial = sin_model(params);
    let before = mean(&initial);
    let report = sim::run(&cfg, initial, Box::new(FedAvg), |_| ShiftTrainer {
        shift: 0.25,
        examples: 10,
    })
    .await
    .unwrap();
    let c = &report.clients[0];
    assert_eq!(c.accepted, 1);
    assert_eq!(c.bytes_up, 64 << 20);
    assert_eq!(c.bytes_down, 64 << 20);
    assert!((mean(&report.model) - before - 0.25).abs() < 1e-6);
    let status = report.coordinator.status();
    assert_eq!(status.phase, v1::Phase::Finished as i32);
}

/// Breaks every device's download once after its first chunk.
#[derive(Debug)]
struct FlakyNetwork;

impl sim::Faults for FlakyNetwork {
    fn plan(&self, _client: &str, _round: u64) -> sim::FaultPlan {
        sim::FaultPlan {
            interrupt_download: Some(1),
            ..Default::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_where_it_stopped() {
    let params = 700_000; // 2.8 MB: three chunks
    let server = common::start(common::quick_config(2, 1, 1), sin_model(params)).await;
    let mut opts = fedtune_client::ClientOptions::new("flaky");
    opts.backoff.initial = Duration::from_millis(5);
    let transport = sim::FaultyTransport::new(
        fedtune_client::GrpcTransport::connect_lazy(&server.url).unwrap(),
        "flaky",
        std::sync::Arc::new(FlakyNetwork),
        std::sync::Arc::default(),
    );
    let summary = fedtune_client::Client::new(transport, opts)
        .run(ShiftTrainer {
            shift: 1.0,
            examples: 1,
        })
        .await
        .unwrap();
    assert_eq!(summary.accepted, 2);
    // Resumed, not restarted: each round's model crossed the wire exactly once.
    assert_eq!(summary.bytes_down, 2 * 4 * params as u64);
    assert!((mean(&server.coord.global().1) - mean(&sin_model(params)) - 2.0).abs() < 1e-5);
}

/// The bulk calls are framed below tonic's codec on both sides (`fedtune_proto::bulk`); the
/// wire stays plain gRPC: our client against a server that uses tonic's codec throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_calls_interoperate_with_tonics_codec() {
    let params = 600_000; // 2.4 MB: three chunks each way
    let dir = tempfile::tempdir().unwrap();
    let coord = fedtune_server::Coordinator::open(
        common::quick_config(2, 2, 2),
        dir.path(),
        sin_model(params),
        Box::new(FedAvg),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tonic_only = fedtune_server::FederationService::new(coord.clone()).into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tonic_only)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let devices = (0..2).map(|i| {
        let transport = fedtune_client::GrpcTransport::connect_lazy(&url).unwrap();
        let client = fedtune_client::Client::new(
            transport,
            fedtune_client::ClientOptions::new(format!("device-{i}")),
        );
        tokio::spawn(client.run(ShiftTrainer {
            shift: 0.5,
            examples: 1,
        }))
    });
    for summary in futures::future::join_all(devices).await {
        let summary = summary.unwrap().unwrap();
        assert_eq!(summary.accepted, 2);
        assert_eq!(summary.bytes_down, 2 * 4 * params as u64);
    }
    coord.finished().await;
    let shifted = mean(&coord.global().1) - mean(&sin_model(params));
    assert!((shifted - 1.0).abs() < 1e-6, "{shifted}");
}

/// A device started before its server (or outliving a server restart) keeps retrying: by
/// default it never gives up, and joins once the server is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_waits_for_a_server_that_comes_later() {
    // Another loopback address than the other tests' servers (127.0.0.1), so that none of
    // them can be given this port once it is free and take this device's join.
    let spare = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let addr = spare.local_addr().unwrap();
    drop(spare);
    let mut opts = fedtune_client::ClientOptions::new("early");
    // Fast retries: the 12 attempts the runtime used to allow would be over in well under a
    // second, long before the server starts.
    opts.backoff.initial = Duration::from_millis(5);
    opts.backoff.max = Duration::from_millis(40);
    let transport = fedtune_client::GrpcTransport::connect_lazy(&format!("http://{addr}")).unwrap();
    let device = tokio::spawn(
        fedtune_client::Client::new(transport, opts).run(ShiftTrainer {
            shift: 1.0,
            examples: 1,
        }),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !device.is_finished(),
        "the device gave up: {:?}",
        device.await
    );
    let dir = tempfile::tempdir().unwrap();
    let coord = fedtune_server::Coordinator::open(
        common::quick_config(1, 1, 1),
        dir.path(),
        sin_model(100),
        Box::new(FedAvg),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let c = coord.clone();
    tokio::spawn(async move { fedtune_server::serve(c, listener, std::future::pending()).await });
    let summary = tokio::time::timeout(Duration::from_secs(30), device)
        .await
        .expect("the device finishes once the server is up")
        .unwrap()
        .unwrap();
    assert_eq!(summary.accepted, 1);
}

/// With `give_up_after`, a device stops retrying an unreachable server after about that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_gives_up_when_told_to() {
    // Another loopback address than the other tests' servers (127.0.0.1), so that none of
    // them can be given this port once it is free and take this device's join.
    let spare = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let addr = spare.local_addr().unwrap();
    drop(spare);
    let mut opts = fedtune_client::ClientOptions::new("impatient");
    opts.backoff.initial = Duration::from_millis(5);
    opts.backoff.max = Duration::from_millis(40);
    opts.backoff.give_up_after = Some(Duration::from_millis(300));
    let transport = fedtune_client::GrpcTransport::connect_lazy(&format!("http://{addr}")).unwrap();
    let started = std::time::Instant::now();
    let err = fedtune_client::Client::new(transport, opts)
        .run(ShiftTrainer {
            shift: 1.0,
            examples: 1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, fedtune_client::ClientError::RetriesExhausted { .. }),
        "{err}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
}
