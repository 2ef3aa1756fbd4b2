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

/// Size-like flags are bounded by what they mean, before anything is allocated: threads by
/// the cores, a LoRA rank by the projections, a run by the machine's memory.
#[test]
fn sizes_that_cannot_fit_are_refused_with_their_bound() {
    let started = Instant::now();
    for args in [
        &["generate", "-p", "Who", "-n", "1", "-t", "100000"][..],
        &["simulate", "--threads", "100000"][..],
    ] {
        let out = fedtune(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("100000 is more than") && stderr.contains("threads"),
            "{args:?}: {stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for (flags, needle) in [
        (&["--rank", "100000"][..], "LoRA rank 100000 exceeds"),
        (
            &["--batch-size", "100000", "--seq", "100000"][..],
            "this run needs about",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["simulate", "--rounds", "1"])
            .args(flags)
            .arg("--out")
            .arg(dir.path().join("run"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{flags:?}: {stderr}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A 20 MB JSONL record is skipped and counted, unread, instead of taking gigabytes; the
/// limit is a flag.
#[test]
fn a_huge_record_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    let huge = "to be or not ".repeat(20 << 20 >> 4);
    std::fs::write(
        &data,
        format!(
            "{{\"c\":\"a\",\"text\":\"Who is there?\"}}\n{{\"c\":\"b\",\"text\":\"{huge}\"}}\n\
             {{\"c\":\"b\",\"text\":\"Stand and unfold yourself.\"}}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let path = data.to_str().unwrap();
    let out = fedtune(&["eval", "--data", path, "--client-field", "c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["skipped_records"], 1);
    assert_eq!(report["n_records"], 2);
    assert!(started.elapsed() < Duration::from_secs(30));
    let out = fedtune(&[
        "eval",
        "--data",
        path,
        "--client-field",
        "c",
        "--max-record-bytes",
        "10",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("3 records skipped"),
        "{stderr}"
    );
}

/// Messages a person reads: the path named once, what it is when it is not a model, control
/// bytes from a file escaped, the output path named, another kind of directory not written
/// into.
#[test]
fn messages_name_the_path_once_and_escape_control_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let missing = missing.to_str().unwrap();
    let out = fedtune(&["generate", "-m", missing, "-p", "Who"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches(missing).count(), 1, "{stderr}");
    let out = fedtune(&["generate", "-m", dir.path().to_str().unwrap(), "-p", "Who"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a directory"), "{stderr}");
    assert!(!stderr.contains("No such device"), "{stderr}");
    // A GGUF file whose only metadata key holds an escape sequence, with an unknown type.
    let bad = dir.path().join("bad.gguf");
    let mut bytes = b"GGUF\x03\0\0\0".to_vec();
    bytes.extend(0u64.to_le_bytes()); // tensors
    bytes.extend(1u64.to_le_bytes()); // metadata entries
    bytes.extend(8u64.to_le_bytes());
    bytes.extend(b"ab\x1b[31mc");
    bytes.extend(99u32.to_le_bytes());
    std::fs::write(&bad, bytes).unwrap();
    let out = fedtune(&["generate", "-m", bad.to_str().unwrap(), "-p", "Who"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!out.stderr.contains(&0x1b), "raw escape byte: {stderr}");
    assert!(stderr.contains("ab\\u{1b}[31mc"), "{stderr}");

    let out = fedtune(&["simulate", "--rounds", "1", "--out", "/proc/fedtune-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/proc/fedtune-run"),
        "{stderr}"
    );
    let other = dir.path().join("photos");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("holiday.jpg"), b"...").unwrap();
    let out = fedtune(&[
        "simulate",
        "--rounds",
        "1",
        "--out",
        other.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("already holds other files"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}
