//! Bad arguments are refused before anything is left behind or waited for.

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

/// An address the server cannot listen on fails before the state directory is created.
#[test]
fn a_server_that_cannot_bind_leaves_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    for listen in ["127.0.0.1:99999", in_use.as_str()] {
        let state = dir.path().join("state");
        let out = Command::new(BIN)
            .args(["server", "--listen", listen, "--state"])
            .arg(&state)
            .args(["--model", "linreg:4", "--rounds", "1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{listen}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(listen), "{listen}: {stderr}");
        assert!(!state.exists(), "{listen}: state was created");
    }
}

/// A server URL without a scheme is refused at once, not after a minute of retries.
#[test]
fn a_client_with_a_bad_server_url_fails_at_once() {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["client", "--server", "127.0.0.1:50299", "--id", "phone"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:50299") && stderr.contains("http://"),
        "{stderr}"
    );
}
