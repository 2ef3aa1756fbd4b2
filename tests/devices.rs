//! Devices that cannot train, impostors and floods of ids: a device that declines or misses a
//! deadline leaves the cohort until it checks in anew, an id has one live session, ids that
//! never check in are neither drawn nor kept, and the registry is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedtune_proto::{Bundle, Tensor, v1};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

fn bundle(values: &[f32]) -> Bundle {
    Bundle::new(vec![
        Tensor::from_f32("w", vec![values.len()], values).unwrap(),
    ])
    .unwrap()
}

/// The defect as reported: a device started with the wrong model used to stay in the cohort,
/// and every round waited out its deadline. Now it declines and exits, and the others finish
/// every round long before one deadline.
#[test]
fn a_device_with_the_wrong_model_declines_and_rounds_go_on() {
    let state = tempfile::tempdir().unwrap();
    let mut server = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--model", "linreg:8"])
        .args(["--rounds", "3", "--clients-per-round", "2"])
        .args(["--over-selection", "1.5", "--min-clients", "3"])
        .args(["--round-timeout", "120s", "--linger", "2s", "--log", "warn"])
        .arg("--state")
        .arg(state.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url = common::listening_url(server.stdout.take().unwrap());
    let start = Instant::now();
    let device = |i: usize, dim: usize| {
        Command::new(BIN)
            .args(["client", "--server", &url, "--id", &format!("dev-{i}")])
            .args(["--index", &i.to_string(), "--dim", &dim.to_string()])
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let good = [device(0, 8), device(1, 8)];
    let wrong = device(2, 4).wait_with_output().unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("does not fit"), "{err}");
    for d in good {
        let out = d.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(server.wait().unwrap().success());
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "rounds waited for the device that cannot train: {:?}",
        start.elapsed()
    );
}

/// Devices a, b and c, joined and checked in together (the round opens with the last).
async fn three_devices(url: &str) -> [common::RawClient; 3] {
    let (a, b, c) = tokio::join!(
        common::RawClient::join(url, "a"),
        common::RawClient::join(url, "b"),
        common::RawClient::join(url, "c"),
    );
    [a, b, c]
}

/// A device that holds a task and misses the deadline is not drawn again until it checks in
/// anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_misses_a_deadline_is_benched_until_it_checks_in() {
    let mut config = common::quick_config(2, 3, 3);
    config.min_commit = 2;
    config.round_timeout = Duration::from_millis(700);
    let server = common::start(config, bundle(&[0.0; 4])).await;
    let [mut a, mut b, mut c] = three_devices(&server.url).await;
    let (ta, tb, _silent) = (a.task().await, b.task().await, c.task().await);
    for (client, task) in [(&mut a, &ta), (&mut b, &tb)] {
        client
            .send(common::upload_messages(task, &bundle(&[1.0; 4]), 1))
            .await
            .unwrap();
    }
    // Round 1 commits at its deadline with a and b; round 2 draws only them.
    let (ta, tb) = (a.task().await, b.task().await);
    assert_eq!((ta.round, tb.round), (2, 2));
    let status = server.coord.status();
    assert_eq!((status.round, status.selected), (2, 2), "{status:?}");
    // c checks in anew: it can be drawn again (round 2 is already drawn without it).
    let answer = c.try_check_in().await.unwrap().outcome;
    assert!(
        matches!(
            answer,
            Some(v1::check_in_response::Outcome::RetryAfterMs(_))
        ),
        "{answer:?}"
    );
}

/// A device that declines leaves the cohort at once: the round commits without waiting for
/// it, and the next round does not draw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_task_shrinks_the_cohort_at_once() {
    let mut config = common::quick_config(2, 3, 3);
    config.min_commit = 2;
    let server = common::start(config, bundle(&[0.0; 4])).await;
    let [mut a, mut b, mut c] = three_devices(&server.url).await;
    let (ta, tb, tc) = (a.task().await, b.task().await, c.task().await);
    let decline = v1::DeclineRequest {
        task_id: tc.task_id.clone(),
        round: tc.round,
        reason: "the model does not fit this trainer\u{1b}[31m".into(),
    };
    c.rpc.decline(c.authed(decline)).await.unwrap();
    for (client, task) in [(&mut a, &ta), (&mut b, &tb)] {
        client
            .send(common::upload_messages(task, &bundle(&[1.0; 4]), 1))
            .await
            .unwrap();
    }
    // Committed with two (the round's deadline is a minute away), and round 2 draws two.
    let next = tokio::time::timeout(Duration::from_secs(10), a.task())
        .await
        .expect("the round committed without the declined device");
    assert_eq!(next.round, 2);
    assert_eq!(server.coord.status().selected, 2);
    // A decline of a task it does not hold is ignored; of no session, refused.
    let forged = v1::DeclineRequest {
        task_id: next.task_id.clone(),
        round: 2,
        reason: String::new(),
    };
    c.rpc.decline(c.authed(forged.clone())).await.unwrap();
    assert_eq!(server.coord.status().selected, 2);
    let e = c.rpc.decline(forged).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

/// One id, one session: a second join revokes the first, and the new session gets the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_revokes_the_first_session() {
    let server = common::start(common::quick_config(1, 1, 1), bundle(&[0.0; 2])).await;
    let mut first = common::RawClient::join(&server.url, "phone").await;
    let task = first.task().await;
    let mut second = common::RawClient::join(&server.url, "phone").await;
    let e = first.try_check_in().await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = first
        .send(common::upload_messages(&task, &bundle(&[1.0; 2]), 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(second.task().await.task_id, task.task_id);
}

/// Ids that join and never check in are not counted, drawn or stored, and make way for real
/// devices; a registry full of devices that did check in refuses more, as "busy".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_never_check_in_are_not_kept() {
    let mut config = common::quick_config(1, 2, 2);
    config.max_devices = 3;
    let server = common::start(config, bundle(&[0.0; 2])).await;
    let mut rpc = common::RawClient::join(&server.url, "probe").await.rpc;
    for i in 0..50 {
        let join = v1::JoinRequest {
            client_id: format!("fake-{i}"),
            capabilities: None,
            proof: None,
        };
        rpc.join(join).await.unwrap();
    }
    assert_eq!(server.coord.status().registered_clients, 1);
    let (a, b) = tokio::join!(
        common::RawClient::join(&server.url, "a"),
        common::RawClient::join(&server.url, "b"),
    );
    assert_eq!(server.coord.status().registered_clients, 3);
    let e = rpc
        .join(v1::JoinRequest {
            client_id: "one-too-many".into(),
            capabilities: None,
            proof: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("registry is full"), "{e:?}");
    drop((a, b));
    let stored = server.coord.with_store(|s| s.clients()).unwrap();
    assert!(
        stored.iter().all(|id| !id.starts_with("fake")),
        "{stored:?}"
    );
}

/// "Come back later" is jittered ±50% around the retry hint, so a fleet told to wait does not
/// come back at one instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_hints_are_jittered() {
    let mut config = common::quick_config(1, 2, 2);
    config.long_poll = Duration::from_millis(5);
    config.retry_after = Duration::from_millis(1000);
    let server = common::start(config, bundle(&[0.0; 2])).await;
    let mut lonely = common::RawClient::join(&server.url, "lonely").await;
    let mut hints = Vec::new();
    for _ in 0..40 {
        match lonely.try_check_in().await.unwrap().outcome {
            Some(v1::check_in_response::Outcome::RetryAfterMs(ms)) => hints.push(ms),
            other => panic!("expected a retry hint, got {other:?}"),
        }
    }
    let (lo, hi) = (hints.iter().min().unwrap(), hints.iter().max().unwrap());
    assert!(*lo >= 500 && *hi <= 1500, "{hints:?}");
    assert!(hi - lo >= 400, "hints barely spread: {hints:?}");
}

/// Held long-polls are bounded: at most `max_held_per_connection` from one connection and
/// `max_held_check_ins` in all; a check-in beyond either is told "retry after" at once
/// instead of holding a stream and its buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_check_ins_are_bounded_per_connection_and_in_all() {
    use fedtune_proto::v1::federation_client::FederationClient;
    let long_poll = Duration::from_secs(3);
    let mut config = common::quick_config(1, 2, 100); // no round opens: every call waits
    config.long_poll = long_poll;
    config.max_held_check_ins = 3;
    config.max_held_per_connection = 2;
    let server = common::start(config, bundle(&[0.0; 2])).await;
    let connect = || async {
        let channel = tonic::transport::Channel::from_shared(server.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        FederationClient::new(channel)
    };
    let (a, b) = (connect().await, connect().await);
    // Three devices' check-ins on connection a, then two on connection b.
    let mut calls = Vec::new();
    for (i, conn) in [&a, &a, &a, &b, &b].into_iter().enumerate() {
        let mut rpc = conn.clone();
        let token = rpc
            .join(v1::JoinRequest {
                client_id: format!("d{i}"),
                capabilities: None,
                proof: None,
            })
            .await
            .unwrap()
            .into_inner()
            .session_token;
        let mut req = tonic::Request::new(v1::CheckInRequest {});
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let start = Instant::now();
        calls.push(tokio::spawn(async move {
            let resp = rpc.check_in(req).await.unwrap().into_inner();
            assert!(matches!(
                resp.outcome,
                Some(v1::check_in_response::Outcome::RetryAfterMs(_))
            ));
            start.elapsed()
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut held = Vec::new();
    for call in calls {
        held.push(call.await.unwrap() >= long_poll / 2);
    }
    // a: two held, the third answered at once; b: one held (three in all), one answered.
    assert_eq!(held, [true, true, false, true, false]);
}
