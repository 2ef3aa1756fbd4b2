//! Device identity over real loopback gRPC: a server with an authorized-keys list admits only
//! joins signed by a listed key over a fresh nonce. An unknown key, an unsigned join and a
//! replayed join get UNAUTHENTICATED and nothing else, while enrolled devices keep being
//! served; the list is read again when the file changes. Then real `fedtune server` and
//! `fedtune client --key` processes: enrolled devices finish, an unenrolled one is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use ed25519_dalek::SigningKey;
use fedtune_proto::identity::{NONCE_BYTES, public_key_line, sign_join};
use fedtune_proto::v1::{self, federation_client::FederationClient};
use fedtune_proto::{Bundle, Tensor};
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

async fn signed(
    rpc: &mut FederationClient<Channel>,
    key: &SigningKey,
    id: &str,
) -> v1::JoinRequest {
    let nonce = rpc
        .challenge(v1::ChallengeRequest {
            client_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .nonce;
    let n: [u8; NONCE_BYTES] = nonce.as_ref().try_into().unwrap();
    v1::JoinRequest {
        client_id: id.into(),
        capabilities: None,
        proof: Some(v1::DeviceProof {
            public_key: key.verifying_key().to_bytes().to_vec().into(),
            nonce,
            signature: sign_join(key, &n, id).to_vec().into(),
        }),
    }
}

fn unauthenticated(r: Result<tonic::Response<v1::JoinResponse>, tonic::Status>, needle: &str) {
    let s = r.expect_err("the join should be refused");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(
        s.message().contains(needle),
        "`{}` lacks `{needle}`",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_enrolled_signed_fresh_joins_are_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("authorized_keys");
    let (enrolled, stranger) = (
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    );
    std::fs::write(
        &keys,
        public_key_line(&enrolled.verifying_key(), None) + "\n",
    )
    .unwrap();
    let mut config = common::quick_config(1, 1, 100);
    config.authorized_keys = Some(keys.clone());
    let initial = Bundle::new(vec![Tensor::from_f32("w", vec![2], &[0.0; 2]).unwrap()]).unwrap();
    let server = common::start(config, initial).await;
    let mut rpc = FederationClient::connect(server.url.clone()).await.unwrap();

    // Unsigned, unknown key, replayed.
    let unsigned = v1::JoinRequest {
        client_id: "a".into(),
        capabilities: None,
        proof: None,
    };
    unauthenticated(rpc.join(unsigned).await, "enrolled devices only");
    let req = signed(&mut rpc, &stranger, "b").await;
    unauthenticated(rpc.join(req).await, "not in the server's authorized keys");
    let req = signed(&mut rpc, &enrolled, "a").await;
    let token = rpc
        .join(req.clone())
        .await
        .unwrap()
        .into_inner()
        .session_token;
    unauthenticated(rpc.join(req).await, "used or expired");
    // The enrolled device is served: its session works.
    let mut check_in = tonic::Request::new(v1::CheckInRequest {});
    check_in
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    rpc.check_in(check_in).await.unwrap();

    // Enrolling the stranger by editing the file admits it without a restart (the file is
    // checked at most once a second, by modification time).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let both = format!(
        "{}\n{} b\n",
        public_key_line(&enrolled.verifying_key(), None),
        public_key_line(&stranger.verifying_key(), None)
    );
    std::fs::write(&keys, both).unwrap();
    let req = signed(&mut rpc, &stranger, "b").await;
    rpc.join(req).await.unwrap();
    // ... bound to id b: not as anyone else.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let req = signed(&mut rpc, &stranger, "c").await;
    unauthenticated(rpc.join(req).await, "another client id");
}

#[test]
fn enrolled_device_processes_finish_and_an_unenrolled_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("authorized_keys");
    let key_file = |i: usize| dir.path().join(format!("device-{i}.key"));
    let mut list = String::new();
    for i in 0..2 {
        let out = Command::new(BIN)
            .args([
                "client",
                "--server",
                "http://127.0.0.1:1",
                "--index",
                &i.to_string(),
            ])
            .arg("--key")
            .arg(key_file(i))
            .arg("--print-public-key")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(line.trim_end().ends_with(&format!(" device-{i}")), "{line}");
        list.push_str(&line);
    }
    std::fs::write(&keys, list).unwrap();
    let mut server = common::two_device_server(&dir.path().join("state"))
        .arg("--authorized-keys")
        .arg(&keys)
        .spawn()
        .unwrap();
    let url = common::listening_url(server.stdout.take().unwrap());
    let device = |i: usize| {
        common::two_device_client(&url, i)
            .arg("--key")
            .arg(key_file(i))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let good: Vec<_> = (0..2).map(device).collect();
    let intruder = device(2).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&intruder.stderr);
    assert!(!intruder.status.success());
    assert!(err.contains("not in the server's authorized keys"), "{err}");
    for d in good {
        let out = d.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(server.wait().unwrap().success());
}
