//! The `fedtune` binary restarts itself once with glibc's huge-page heap tunable, keeping its
//! process id, and leaves a user's own `GLIBC_TUNABLES` alone.

#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

/// `GLIBC_TUNABLES` as the running server process sees it.
fn tunables_of_server(env: Option<&str>) -> Option<String> {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--listen", "127.0.0.1:0", "--model", "linreg:4"])
        .args(["--log", "warn", "--no-fsync", "--state"])
        .arg(state.path())
        .stdout(Stdio::piped())
        .env_remove("GLIBC_TUNABLES");
    if let Some(v) = env {
        cmd.env("GLIBC_TUNABLES", v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    assert!(listening.starts_with("listening on "), "{listening}");
    // The spawned pid is still the server's: the restart is an exec, not a child.
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("GLIBC_TUNABLES=").map(str::to_string))
}

#[test]
fn restarts_once_with_the_huge_page_heap_unless_tunables_are_set() {
    assert_eq!(
        tunables_of_server(None).as_deref(),
        Some("glibc.malloc.hugetlb=1")
    );
    assert_eq!(tunables_of_server(Some("")).as_deref(), Some(""));
    assert_eq!(
        tunables_of_server(Some("glibc.malloc.arena_max=2")).as_deref(),
        Some("glibc.malloc.arena_max=2")
    );
}
