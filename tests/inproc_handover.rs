//! The in-process transport hands models and updates over whole (no encoding, chunks or
//! digests): the server still authenticates, admits and validates each update as it does a
//! streamed one, refuses bad ones with the same statuses, and counts only good ones. A
//! non-finite update cannot even be handed over: only a bundle proved finite can.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::refused;

use fedtune::sim::InprocTransport;
use fedtune_client::Transport;
use fedtune_proto::{Bundle, FiniteBundle, Tensor, v1};
use fedtune_server::{Coordinator, strategy::FedAvg};
use tonic::Code;

fn bundle(values: &[f32]) -> Bundle {
    Bundle::new(vec![
        Tensor::from_f32("w", vec![values.len()], values).unwrap(),
    ])
    .unwrap()
}

fn finite(values: &[f32]) -> FiniteBundle {
    bundle(values).into_finite().unwrap()
}

async fn task(t: &InprocTransport, token: &str) -> v1::Task {
    match t.check_in(token).await.unwrap().outcome {
        Some(v1::check_in_response::Outcome::Task(task)) => task,
        other => panic!("expected a task, got {other:?}"),
    }
}

fn header(task: &v1::Task, num_examples: u64) -> v1::UploadHeader {
    v1::UploadHeader {
        task_id: task.task_id.clone(),
        round: task.round,
        model_version: task.model_version,
        num_examples,
        update: None,
        within_clip: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_updates_are_validated_like_streamed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let initial = bundle(&[1.0, 2.0, 3.0, 4.0]);
    let coord = Coordinator::open(
        common::quick_config(1, 2, 2),
        dir.path(),
        initial.clone(),
        Box::new(FedAvg),
    )
    .unwrap();
    let t = InprocTransport::new(coord.clone());
    assert!(t.shares_memory());
    let join = |id: &str| v1::JoinRequest {
        client_id: id.into(),
        capabilities: None,
        proof: None,
    };
    let a = t.join(join("a")).await.unwrap().session_token;
    let b = t.join(join("b")).await.unwrap().session_token;
    // Devices count from their first check-in: both check in together.
    let (ta, tb) = tokio::join!(task(&t, &a), task(&t, &b));

    // The model itself, for the version served; another version is gone.
    assert_eq!(t.fetch_shared(&a, ta.model_version).await.unwrap(), initial);
    let gone = t.fetch_shared(&a, ta.model_version + 1).await.unwrap_err();
    assert_eq!(gone.code(), Code::FailedPrecondition, "{gone:?}");
    let unknown = t
        .fetch_shared("nobody", ta.model_version)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);

    let good = finite(&[0.5; 4]);
    let nan = bundle(&[0.0, f32::NAN, 0.0, 0.0])
        .into_finite()
        .unwrap_err();
    assert!(
        nan.to_string()
            .contains("`w` holds a non-finite value at element 1"),
        "{nan}"
    );
    refused(
        t.submit_shared(&a, header(&ta, 10), finite(&[0.0; 5]))
            .await,
        Code::InvalidArgument,
        "shape [5]",
    );
    refused(
        t.submit_shared(&a, header(&ta, 0), good.clone()).await,
        Code::InvalidArgument,
        "num_examples",
    );
    refused(
        t.submit_shared("nobody", header(&ta, 10), good.clone())
            .await,
        Code::Unauthenticated,
        "unknown session token",
    );
    let mut stale = header(&ta, 10);
    stale.model_version += 1;
    refused(
        t.submit_shared(&a, stale, good.clone()).await,
        Code::FailedPrecondition,
        "model version",
    );
    refused(
        t.submit_shared(&a, header(&tb, 10), good.clone()).await,
        Code::InvalidArgument,
        "another client",
    );

    // Nothing of those counted: a's good update is the first, a second one is a duplicate.
    let ok = t
        .submit_shared(&a, header(&ta, 10), good.clone())
        .await
        .unwrap();
    assert_eq!((ok.accepted, ok.received), (true, 1));
    refused(
        t.submit_shared(&a, header(&ta, 10), good.clone()).await,
        Code::AlreadyExists,
        "client `a` already contributed to round 1",
    );
    let ok = t
        .submit_shared(&b, header(&tb, 30), finite(&[1.5; 4]))
        .await
        .unwrap();
    assert_eq!(ok.received, 2);
    coord.finished().await;
    // FedAvg of the two deltas, weighted 10 : 30: 0.5·0.25 + 1.5·0.75 = 1.25 added to each value.
    let (version, model) = coord.global();
    assert_eq!(version, 1);
    assert_eq!(model, bundle(&[2.25, 3.25, 4.25, 5.25]));
}
