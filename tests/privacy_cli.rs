//! `fedtune privacy`: the contract lines scripts read (`epsilon=`, `noise_multiplier=`), the two
//! commands inverting each other, and clear refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn fedtune(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fedtune"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_value(stdout: &str, key: &str) -> f64 {
    let last = stdout.lines().last().unwrap();
    last.strip_prefix(key)
        .unwrap_or_else(|| panic!("last line {last:?} is not {key}<value>"))
        .parse()
        .unwrap()
}

#[test]
fn epsilon_and_noise_invert_each_other() {
    let common = [
        "--sampling-rate",
        "0.02",
        "--rounds",
        "500",
        "--delta",
        "1e-7",
    ];
    for sampling in ["poisson", "fixed"] {
        let mut args = vec!["privacy", "noise", "--epsilon", "3", "--sampling", sampling];
        args.extend(common);
        let (ok, out, err) = fedtune(&args);
        assert!(ok, "{err}");
        let z = last_value(&out, "noise_multiplier=");
        let z_text = z.to_string();
        let mut args = vec!["privacy", "epsilon", "--noise-multiplier", &z_text];
        args.extend(["--sampling", sampling]);
        args.extend(common);
        let (ok, out, err) = fedtune(&args);
        assert!(ok, "{err}");
        let eps = last_value(&out, "epsilon=");
        assert!(eps <= 3.0 && eps > 2.99, "{sampling}: z={z} gives ε={eps}");
    }
    // The count query costs privacy: the same update noise gives a larger ε with it.
    let mut base = vec!["privacy", "epsilon", "--noise-multiplier", "1"];
    base.extend(common);
    let alone = last_value(&fedtune(&base).1, "epsilon=");
    base.extend(["--count-noise-multiplier", "5"]);
    let with_count = last_value(&fedtune(&base).1, "epsilon=");
    assert!(with_count > alone, "{with_count} vs {alone}");
}

#[test]
fn bad_settings_are_refused_by_name() {
    for (args, needle) in [
        (
            vec![
                "--noise-multiplier",
                "1",
                "--sampling-rate",
                "0",
                "--rounds",
                "5",
                "--delta",
                "1e-5",
            ],
            "--sampling-rate",
        ),
        (
            vec![
                "--noise-multiplier=-1",
                "--sampling-rate",
                "0.1",
                "--rounds",
                "5",
                "--delta",
                "1e-5",
            ],
            "--noise-multiplier -1 is not a positive number",
        ),
        (
            vec![
                "--noise-multiplier",
                "1",
                "--sampling-rate",
                "0.1",
                "--rounds",
                "5",
                "--delta",
                "2",
            ],
            "delta",
        ),
        (
            vec![
                "--noise-multiplier",
                "1",
                "--sampling-rate",
                "0.1",
                "--rounds",
                "5",
                "--delta",
                "1e-5",
                "--sampling",
                "uniform",
            ],
            "poisson",
        ),
    ] {
        let mut all = vec!["privacy", "epsilon"];
        all.extend(args);
        let (ok, _, err) = fedtune(&all);
        assert!(!ok && err.contains(needle), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The job refuses impossible privacy settings before it loads anything.
#[test]
fn simulate_refuses_bad_privacy_settings() {
    for (args, needle) in [
        (
            vec!["--dp-noise-multiplier", "1", "--dp-distributed"],
            "--secagg",
        ),
        (vec!["--dp-noise-multiplier=-1"], "dp_noise_multiplier"),
        (vec!["--dp-noise-multiplier", "1", "--dp-clip", "0"], "clip"),
        (
            vec!["--dp-noise-multiplier", "1", "--dp-delta", "1.5"],
            "delta",
        ),
        (vec!["--dp-clip", "0.5"], "--dp-noise-multiplier"),
        (vec!["--num-clients", "100"], "num_clients"),
    ] {
        let mut all = vec!["simulate", "--rounds", "1"];
        all.extend(args);
        let (ok, _, err) = fedtune(&all);
        assert!(!ok && err.contains(needle), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
