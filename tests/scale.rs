//! The server's memory at fleet scale: a real `fedtune server` process under 10,000 gRPC
//! devices stays within its bound (3 × model + 64 MiB). Slow (a minute or two): ignored by
//! default; run with `cargo test --release --test scale -- --ignored`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

#[test]
#[ignore = "a minute or two: run with --ignored"]
fn server_memory_holds_its_bound_at_10000_devices() {
    let out = Command::new(BIN)
        .args(["bench", "server-memory", "--clients", "10000", "--params"])
        .arg("1000000")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let figure = |name: &str| -> f64 {
        let field = text
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        field.parse().unwrap()
    };
    let (peak, bound) = (figure("server_peak_rss_mib"), figure("bound_mib"));
    assert!(peak <= bound, "peak {peak} MiB above the bound {bound} MiB");
}
