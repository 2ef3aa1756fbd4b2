//! Bad uploads and bad callers are refused with a clear status, nothing of them is counted,
//! and the server keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::refused;

use bytes::Bytes;
use fedtune_proto::{Bundle, Compression, DType, EncodedBundle, Tensor, v1};
use tonic::Code;

fn bundle(values: &[f32]) -> Bundle {
    Bundle::new(vec![
        Tensor::from_f32("w", vec![values.len()], values).unwrap(),
        Tensor::from_f32("b", vec![1], &[0.0]).unwrap(),
    ])
    .unwrap()
}

/// One long scenario on purpose: every kind of bad upload against the same running server, in
/// turn, then a good one, so the test proves that no refusal leaves the round in a bad state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_the_server_keeps_serving() {
    let initial = bundle(&[1.0, 2.0, 3.0, 4.0]);
    let server = common::start(common::quick_config(2, 2, 2), initial.clone()).await;
    let mut a = common::RawClient::join(&server.url, "a").await;
    let mut b = common::RawClient::join(&server.url, "b").await;
    let ta = a.task().await;
    let good = bundle(&[0.5, 0.5, 0.5, 0.5]);

    // A chunk corrupted in transit fails the digest.
    let mut msgs = common::upload_messages(&ta, &good, 10);
    if let Some(v1::upload_message::Kind::Chunk(c)) = &mut msgs[1].kind {
        let mut bytes = c.to_vec();
        bytes[0] ^= 0x40;
        *c = Bytes::from(bytes);
    }
    refused(a.send(msgs).await, Code::DataLoss, "digest mismatch");

    // NaN and infinity are refused, naming the tensor.
    refused(
        a.send(common::upload_messages(
            &ta,
            &bundle(&[0.0, f32::NAN, 0.0, 0.0]),
            10,
        ))
        .await,
        Code::InvalidArgument,
        "`w` holds a non-finite value at element 1",
    );
    refused(
        a.send(common::upload_messages(
            &ta,
            &bundle(&[f32::INFINITY, 0.0, 0.0, 0.0]),
            10,
        ))
        .await,
        Code::InvalidArgument,
        "non-finite",
    );

    // Wrong shape, wrong dtype, unknown tensor.
    refused(
        a.send(common::upload_messages(&ta, &bundle(&[0.0; 5]), 10))
            .await,
        Code::InvalidArgument,
        "shape [5]",
    );
    let f16 = Bundle::new(vec![
        Tensor::from_f32_as("w", vec![4], &[0.0; 4], DType::F16).unwrap(),
        Tensor::from_f32("b", vec![1], &[0.0]).unwrap(),
    ])
    .unwrap();
    refused(
        a.send(common::upload_messages(&ta, &f16, 10)).await,
        Code::InvalidArgument,
        "dtype F16",
    );
    let alien = Bundle::new(vec![
        Tensor::from_f32("w", vec![4], &[0.0; 4]).unwrap(),
        Tensor::from_f32("z", vec![1], &[0.0]).unwrap(),
    ])
    .unwrap();
    refused(
        a.send(common::upload_messages(&ta, &alien, 10)).await,
        Code::InvalidArgument,
        "unknown tensor `z`",
    );

    // Protocol errors: data before the header, zero examples, a stream that just stops.
    let msgs = common::upload_messages(&ta, &good, 10);
    refused(
        a.send(msgs[1..].to_vec()).await,
        Code::InvalidArgument,
        "first upload message must be the header",
    );
    refused(
        a.send(common::upload_messages(&ta, &good, 0)).await,
        Code::InvalidArgument,
        "num_examples",
    );
    let msgs = common::upload_messages(&ta, &good, 10);
    refused(
        a.send(msgs[..msgs.len() - 1].to_vec()).await,
        Code::Cancelled,
        "ended before the digest",
    );

    // Stale: a round or model version that is not open, a task that was never issued.
    let mut stale = ta.clone();
    stale.round += 5;
    refused(
        a.send(common::upload_messages(&stale, &good, 10)).await,
        Code::FailedPrecondition,
        "round 6 is not open",
    );
    let mut stale = ta.clone();
    stale.model_version += 1;
    refused(
        a.send(common::upload_messages(&stale, &good, 10)).await,
        Code::FailedPrecondition,
        "model version 1",
    );
    let mut forged = ta.clone();
    forged.task_id = "made-up".into();
    refused(
        a.send(common::upload_messages(&forged, &good, 10)).await,
        Code::FailedPrecondition,
        "unknown task",
    );

    // Unknown clients: no token, a made-up token.
    let mut rpc = a.rpc.clone();
    let err = rpc.check_in(v1::CheckInRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut intruder = common::RawClient {
        rpc: a.rpc.clone(),
        token: "0123456789abcdef".into(),
        offered: None,
    };
    refused(
        intruder.send(common::upload_messages(&ta, &good, 10)).await,
        Code::Unauthenticated,
        "unknown session token",
    );
    let err = intruder
        .rpc
        .check_in(intruder.authed(v1::CheckInRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Nothing so far was counted; the server still serves: a good upload is accepted...
    assert_eq!(server.coord.status().received, 0);
    let ok = a
        .send(common::upload_messages(&ta, &good, 10))
        .await
        .unwrap();
    assert!(ok.accepted);
    assert_eq!(ok.received, 1);
    // ...once.
    refused(
        a.send(common::upload_messages(&ta, &good, 10)).await,
        Code::AlreadyExists,
        "already contributed to round 1",
    );

    // b completes round 1; a's round-1 update is now stale.
    let tb = b.task().await;
    b.send(common::upload_messages(
        &tb,
        &bundle(&[1.5, 1.5, 1.5, 1.5]),
        30,
    ))
    .await
    .unwrap();
    let t2 = loop {
        let t = a.task().await;
        if t.round == 2 {
            break t;
        }
    };
    assert_eq!(t2.model_version, 1);
    refused(
        a.send(common::upload_messages(&ta, &good, 10)).await,
        Code::FailedPrecondition,
        "round 1 is not open",
    );

    // Version 1 = initial + (10·0.5 + 30·1.5)/40 = initial + 1.25, from exactly a and b.
    let (version, model) = server.coord.global();
    assert_eq!(version, 1);
    assert_eq!(
        model.get("w").unwrap().to_f32().as_ref(),
        &[2.25, 3.25, 4.25, 5.25]
    );
    assert_eq!(
        server.coord.with_store(|s| s.contributors(1)).unwrap(),
        vec!["a", "b"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_updates_and_resumed_downloads_work() {
    let initial = bundle(&[1.0; 4]);
    let server = common::start(common::quick_config(1, 1, 1), initial.clone()).await;
    let mut a = common::RawClient::join(&server.url, "a").await;
    let t = a.task().await;
    // Resume a download from an offset: the tail matches the payload's tail.
    let (_, payload) = server.coord.encoded_global();
    let req = a.authed(v1::DownloadRequest {
        model_version: 0,
        offset: 7,
    });
    let mut stream = a.rpc.download(req).await.unwrap().into_inner();
    let mut tail = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        tail.extend_from_slice(&chunk.data);
    }
    assert_eq!(tail, payload[7..]);
    let past = a.authed(v1::DownloadRequest {
        model_version: 0,
        offset: 999,
    });
    assert_eq!(
        a.rpc.download(past).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let gone = a.authed(v1::DownloadRequest {
        model_version: 3,
        offset: 0,
    });
    assert_eq!(
        a.rpc.download(gone).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let enc = EncodedBundle::encode(&bundle(&[2.0; 4]), Compression::Zstd).unwrap();
    assert!(
        a.send(common::upload_of(&t, &enc, 1))
            .await
            .unwrap()
            .accepted
    );
    server.coord.finished().await;
    assert_eq!(
        server.coord.global().1.get("w").unwrap().to_f32().as_ref(),
        &[3.0; 4]
    );
}

/// A round that misses its minimum by the deadline restarts under the same round number as a
/// new attempt. An upload admitted by the old attempt and completed after the restart is
/// refused as stale and never counted in the new attempt; the new attempt's tasks commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_from_a_restarted_attempt_is_not_counted() {
    let n = 300_000; // 1.2 MB: two chunks, so the upload can stall between them
    let values =
        |v: f32| Bundle::new(vec![Tensor::from_f32("w", vec![n], &vec![v; n]).unwrap()]).unwrap();
    let mut config = common::quick_config(1, 2, 2);
    config.round_timeout = std::time::Duration::from_millis(800);
    let server = common::start(config, values(1.0)).await;
    let mut a = common::RawClient::join(&server.url, "a").await;
    let mut b = common::RawClient::join(&server.url, "b").await;
    let (old, _) = (a.task().await, b.task().await);

    // a's upload of attempt 0 sends its header and first chunk, then stalls.
    let mut msgs = common::upload_messages(&old, &values(100.0), 1000).into_iter();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    for m in msgs.by_ref().take(2) {
        tx.unbounded_send(m).unwrap();
    }
    let req = a.authed(rx);
    let mut rpc = a.rpc.clone();
    let stalled = tokio::spawn(async move { rpc.upload(req).await.map(|r| r.into_inner()) });

    // The deadline passes with nothing received. b, which held a task and sent nothing, is
    // benched: the new attempt waits until it checks in anew, then issues new tasks.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(server.coord.status().phase, v1::Phase::Waiting as i32);
    let tb = b.task().await;
    let new = a.task().await;
    assert_ne!(new.task_id, old.task_id, "the round should restart");
    assert_ne!(tb.task_id, old.task_id);
    assert_eq!(new.round, old.round);

    // The stalled upload now completes: refused, not counted.
    for m in msgs {
        tx.unbounded_send(m).unwrap();
    }
    drop(tx);
    refused(
        stalled.await.unwrap(),
        Code::FailedPrecondition,
        "restarted",
    );
    assert_eq!(server.coord.status().received, 0);

    // The new attempt's uploads commit the round: 1 + (1·1 + 3·3)/4 = 3.5 everywhere.
    a.send(common::upload_messages(&new, &values(1.0), 1))
        .await
        .unwrap();
    b.send(common::upload_messages(&tb, &values(3.0), 3))
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server.coord.finished())
        .await
        .unwrap();
    let (version, model) = server.coord.global();
    assert_eq!(version, 1);
    assert!(model.tensors()[0].to_f32().iter().all(|&v| v == 3.5));
}

/// Sockets that send nothing (not even an HTTP/2 handshake) are closed after the idle
/// timeout instead of holding the server's buffers forever; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let mut config = common::quick_config(1, 1, 1);
    config.idle_timeout = std::time::Duration::from_millis(800);
    let server = common::start(config, bundle(&[0.0])).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = std::time::Instant::now();
    for mut s in silent {
        let mut buf = [0u8; 256];
        // The server's HTTP/2 settings frame may come first; then the close.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent connection stayed open");
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(500));
    // A device still gets through, on a connection that talks.
    let mut a = common::RawClient::join(&server.url, "a").await;
    assert_eq!(a.task().await.round, 1);
}

/// The server bounds the calls in flight on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS):
/// unbounded, 10,000 devices on 16 shared connections put every call in flight at once and the
/// server's memory grew with the fleet. (The 10,000-device measurement is the ignored test in
/// tests/scale.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_per_connection_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = common::start(common::quick_config(1, 1, 1), bundle(&[0.0])).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Client preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    let max_streams = payload
        .chunks_exact(6)
        .find(|e| u16::from_be_bytes([e[0], e[1]]) == 0x3)
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
    assert_eq!(max_streams, Some(fedtune_server::MAX_STREAMS));
    const { assert!(fedtune_server::MAX_STREAMS <= 256) };
}

/// At most `max_concurrent_uploads` updates are staged at once and 4 × that many wait; one
/// more is refused with RESOURCE_EXHAUSTED (the device backs off and retries) and nothing of
/// it is counted. Once the stalled uploads finish, the refused device's retry is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_staging_limit_are_refused_busy() {
    let n = 300_000; // 1.2 MB: two chunks, so an upload can stall between them
    let values =
        |v: f32| Bundle::new(vec![Tensor::from_f32("w", vec![n], &vec![v; n]).unwrap()]).unwrap();
    let mut config = common::quick_config(1, 7, 7);
    config.max_concurrent_uploads = 1;
    let server = common::start(config, values(0.0)).await;
    let mut devices = Vec::new();
    for i in 0..7 {
        devices.push(common::RawClient::join(&server.url, &format!("d{i}")).await);
    }
    let mut tasks = Vec::new();
    for d in &mut devices {
        tasks.push(d.task().await);
    }

    // d0 is staged (header and first chunk, then it stalls in the one slot); d1..d4 send their
    // headers and wait for the slot.
    let mut stalled = Vec::new();
    for i in 0..5 {
        let mut msgs = common::upload_messages(&tasks[i], &values(i as f32), 1).into_iter();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        for m in msgs.by_ref().take(if i == 0 { 2 } else { 1 }) {
            tx.unbounded_send(m).unwrap();
        }
        let req = devices[i].authed(rx);
        let mut rpc = devices[i].rpc.clone();
        let call = tokio::spawn(async move { rpc.upload(req).await.map(|r| r.into_inner()) });
        stalled.push((tx, msgs, call));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A sixth upload finds the slot taken and four waiting: refused at once.
    let busy = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        devices[5].send(common::upload_messages(&tasks[5], &values(5.0), 1)),
    )
    .await
    .expect("a refusal, not a wait");
    refused(busy, Code::ResourceExhausted, "too many uploads");

    // The stalled uploads complete and count; the refused device's retry is accepted.
    for (tx, msgs, call) in stalled {
        for m in msgs {
            tx.unbounded_send(m).unwrap();
        }
        drop(tx);
        call.await.unwrap().unwrap();
    }
    assert_eq!(server.coord.status().received, 5);
    for i in 5..7 {
        devices[i]
            .send(common::upload_messages(&tasks[i], &values(i as f32), 1))
            .await
            .unwrap();
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), server.coord.finished())
        .await
        .unwrap();
    // (0 + 1 + … + 6) / 7 = 3: every update counted once, the refused one only by its retry.
    let (_, model) = server.coord.global();
    assert!(model.tensors()[0].to_f32().iter().all(|&v| v == 3.0));
}
