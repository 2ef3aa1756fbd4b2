//! The accountant against Google's dp-accounting `RdpAccountant`: ε on a grid of (z, q, T, δ)
//! under both sampling schemes, and with adaptive clipping's count query composed in, within
//! 0.5% relative. The fixture is written by scripts/reference/golden_dp_accounting.py.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fedtune_privacy::{RdpAccountant, Sampling, combined_noise_multiplier};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dp_accounting.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn epsilon_of(p: &Value, z: f64) -> f64 {
    let sampling: Sampling = p["sampling"].as_str().unwrap().parse().unwrap();
    let q = p["cohort"].as_f64().unwrap() / p["population"].as_f64().unwrap();
    let mut a = RdpAccountant::default();
    a.compose(sampling, q, z, p["rounds"].as_u64().unwrap())
        .unwrap();
    a.epsilon(p["delta"].as_f64().unwrap()).unwrap().0
}

fn check(p: &Value, ours: f64, worst: &mut f64) {
    let want = p["epsilon"].as_f64().unwrap();
    // ε = 0 (δ covers the whole divergence) must come out as 0 exactly.
    let rel = if want == 0.0 {
        ours
    } else {
        (ours - want).abs() / want
    };
    assert!(
        rel < 0.005,
        "{p}: ours {ours}, dp-accounting {want} ({rel:.2e} apart)"
    );
    *worst = worst.max(rel);
}

#[test]
fn epsilon_matches_dp_accounting_on_the_grid() {
    let f = fixture();
    let points = f["points"].as_array().unwrap();
    assert!(points.len() >= 30);
    let mut worst = 0.0f64;
    for scheme in ["poisson", "fixed"] {
        let n = points.iter().filter(|p| p["sampling"] == scheme).count();
        assert!(n >= 15, "{scheme}: {n} points");
    }
    for p in points {
        check(
            p,
            epsilon_of(p, p["noise_multiplier"].as_f64().unwrap()),
            &mut worst,
        );
    }
    for p in f["with_count_query"].as_array().unwrap() {
        let z = combined_noise_multiplier(&[
            p["noise_multiplier"].as_f64().unwrap(),
            p["count_noise_multiplier"].as_f64().unwrap(),
        ]);
        check(p, epsilon_of(p, z), &mut worst);
    }
    eprintln!("worst relative difference from dp-accounting: {worst:.3e}");
}
