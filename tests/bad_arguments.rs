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

/// Settings a federation cannot run with are refused, named, before any state exists.
#[test]
fn a_server_with_impossible_settings_is_refused_before_any_state() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, setting) in [
        (&["--rounds", "0"][..], "rounds"),
        (&["--local-steps", "0"][..], "local_steps"),
        (&["--batch-size", "0"][..], "batch_size"),
        (
            &["--clients-per-round", "2", "--min-commit", "3"][..],
            "min_commit",
        ),
        (&["--round-timeout", "0s"][..], "round_timeout"),
    ] {
        let state = dir.path().join(setting);
        let out = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--state"])
            .arg(&state)
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}");
        assert!(stderr.contains(setting), "{flags:?}: {stderr}");
        assert!(!state.exists(), "{flags:?}: state was created");
    }
}

/// A server started on a state with a result-changing setting changed (the initial model, the
/// rounds) is refused, naming that setting.
#[test]
fn a_restart_with_other_settings_is_refused() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let server = |model: &str, rounds: &str| {
        let mut c = Command::new(BIN);
        c.args(["server", "--listen", "127.0.0.1:0", "--state"])
            .arg(&state)
            .args([
                "--model",
                model,
                "--rounds",
                rounds,
                "--clients-per-round",
                "1",
            ])
            .args(["--min-clients", "1"]);
        c
    };
    let mut first = server("linreg:4", "3")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    first.kill().unwrap();
    first.wait().unwrap();
    for (model, rounds, setting) in [
        ("linreg:5", "3", "initial_model"),
        ("linreg:4", "4", "rounds"),
    ] {
        let out = server(model, rounds).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setting}");
        assert!(stderr.contains(setting), "{setting}: {stderr}");
    }
}

fn fedtune(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("fedtune runs")
}

/// Values with no meaning are refused with the flag named, not taken as something else.
#[test]
fn meaningless_values_are_refused_by_flag() {
    for (args, flag) in [
        (
            &["generate", "-p", "Who", "-n", "2", "--temp", "nan"][..],
            "--temp",
        ),
        (
            &["logits", "--tokens", "1,,2", "--out", "/nonexistent/x.npy"][..],
            "--tokens",
        ),
    ] {
        let out = fedtune(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["simulate", "--rounds", "1", "--prox-mu=-1", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("prox_mu"),
        "{stderr}"
    );
}

/// `tokenize` defaults to the embedded model, as every command does; logs written to a pipe
/// carry no terminal colour codes.
#[test]
fn tokenize_needs_no_model_flag_and_logs_are_plain() {
    let out = fedtune(&["tokenize", "--text", "Who's there?"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8_lossy(&out.stdout);
    assert!(
        ids.trim().split(',').all(|t| t.parse::<u32>().is_ok()),
        "{ids}"
    );
    let out = fedtune(&["--log", "debug", "tokenize", "--text", "x"]);
    assert!(
        !out.stderr.contains(&0x1b),
        "ANSI escape in a redirected log"
    );
}
