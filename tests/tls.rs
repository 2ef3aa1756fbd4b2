//! TLS over real loopback gRPC, with `fedtune certs`' development certificates and real
//! `fedtune server` / `fedtune client` processes: a TLS federation finishes; a plaintext
//! device, a device without the server's CA and, under mutual TLS, a device without a
//! certificate or with one from another CA are all refused, while the server keeps serving
//! the good devices.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command};

use fedtune_client::{ClientTls, GrpcTransport, Transport};
use fedtune_proto::v1;

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

fn certs(out: &Path, clients: usize) {
    let run = Command::new(BIN)
        .args([
            "certs",
            "--server-name",
            "localhost",
            "--server-name",
            "127.0.0.1",
        ])
        .args(["--clients", &clients.to_string()])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A TLS server for 2 devices and 2 rounds; its `https://127.0.0.1:PORT`.
fn server(pki: &Path, state: &Path, mutual: bool) -> (Child, String) {
    let mut cmd = common::two_device_server(state);
    cmd.arg("--tls-cert")
        .arg(pki.join("server.pem"))
        .arg("--tls-key")
        .arg(pki.join("server.key"));
    if mutual {
        cmd.arg("--client-ca").arg(pki.join("ca.pem"));
    }
    let mut child = cmd.spawn().unwrap();
    let url = common::listening_url(child.stdout.take().unwrap()).replace("http://", "https://");
    (child, url)
}

fn device(url: &str, pki: &Path, index: usize, mutual: bool) -> Child {
    let mut cmd = common::two_device_client(url, index);
    cmd.args(["--give-up-after", "60s"])
        .arg("--ca")
        .arg(pki.join("ca.pem"));
    if mutual {
        cmd.arg("--tls-cert")
            .arg(pki.join(format!("client-{index}.pem")))
            .arg("--tls-key")
            .arg(pki.join(format!("client-{index}.key")));
    }
    cmd.spawn().unwrap()
}

/// A join through `transport`: refused or failed, it must not succeed.
async fn join_fails(transport: GrpcTransport, what: &str) -> String {
    let r = transport
        .join(v1::JoinRequest {
            client_id: "intruder".into(),
            capabilities: None,
            proof: None,
        })
        .await;
    let e = r.expect_err(what);
    format!(
        "{}: {} [{}]",
        e.code(),
        e.message(),
        fedtune_proto::tls::chain(&e)
    )
}

fn finish(mut server: Child, devices: Vec<Child>) {
    for mut d in devices {
        assert!(d.wait().unwrap().success(), "a device failed");
    }
    assert!(server.wait().unwrap().success(), "the server failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_federation_finishes_and_refuses_plaintext_and_unknown_cas() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, other) = (dir.path().join("pki"), dir.path().join("other"));
    certs(&pki, 0);
    certs(&other, 0);
    let (srv, url) = server(&pki, &dir.path().join("state"), false);

    // Refused before any good device arrives, and the server keeps serving.
    let plain = url.replace("https://", "http://");
    let e = join_fails(GrpcTransport::connect_lazy(&plain).unwrap(), "plaintext").await;
    eprintln!("plaintext device: {e}");
    let wrong_ca = ClientTls::from_files(&other.join("ca.pem"), None).unwrap();
    let t = GrpcTransport::connect_lazy_with(&url, Some(&wrong_ca), false).unwrap();
    let e = join_fails(t, "another CA").await;
    eprintln!("device trusting another CA: {e}");
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    let devices = (0..2).map(|i| device(&url, &pki, i, false)).collect();
    finish(srv, devices);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_devices_without_a_certificate_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, other) = (dir.path().join("pki"), dir.path().join("other"));
    certs(&pki, 2);
    certs(&other, 1);
    let (srv, url) = server(&pki, &dir.path().join("state"), true);
    let devices = (0..2).map(|i| device(&url, &pki, i, true)).collect();

    // While the good devices work: no certificate, and a certificate of another CA.
    let ca = pki.join("ca.pem");
    let anonymous = ClientTls::from_files(&ca, None).unwrap();
    let t = GrpcTransport::connect_lazy_with(&url, Some(&anonymous), false).unwrap();
    eprintln!(
        "device without a certificate: {}",
        join_fails(t, "no certificate").await
    );
    let foreign = ClientTls::from_files(
        &ca,
        Some((&other.join("client-0.pem"), &other.join("client-0.key"))),
    )
    .unwrap();
    let t = GrpcTransport::connect_lazy_with(&url, Some(&foreign), false).unwrap();
    eprintln!(
        "device with another CA's certificate: {}",
        join_fails(t, "foreign").await
    );

    finish(srv, devices);
}

/// Plaintext leaves this machine only when asked: a server on a non-loopback address needs
/// TLS or --insecure, and so does a device dialling another machine over http://.
#[tokio::test]
async fn plaintext_beyond_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--listen", "0.0.0.0:0", "--log", "warn"])
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not a loopback address") && err.contains("--insecure"),
        "{err}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "a refused server leaves no state"
    );

    let err = GrpcTransport::connect_lazy("http://10.1.2.3:50051")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not this machine") && err.contains("--insecure"),
        "{err}"
    );
    assert!(GrpcTransport::connect_lazy_with("http://10.1.2.3:50051", None, true).is_ok());
    let err = GrpcTransport::connect_lazy("https://127.0.0.1:50051")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--ca"), "{err}");
}
