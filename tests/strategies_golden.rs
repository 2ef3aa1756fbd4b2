//! `fedtune aggregate` against Flower 1.42's strategies: ten rules (sixteen settings), three
//! chained rounds each through `--state`, every value within 1e-6 relative of what Flower's
//! `aggregate_fit` computes (fixture: scripts/reference/golden_strategies.py).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use fedtune_proto::{Bundle, Tensor};
use fedtune_server::store::{read_checkpoint, write_checkpoint};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");
const FIXTURE: &str = "tests/fixtures/strategies/flower_rounds.json";

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn bundle(specs: &[(String, Vec<usize>)], values: &[Vec<f32>]) -> Bundle {
    Bundle::new(
        specs
            .iter()
            .zip(values)
            .map(|((n, s), v)| Tensor::from_f32(n.as_str(), s.clone(), v).unwrap())
            .collect(),
    )
    .unwrap()
}

fn write(path: &Path, b: &Bundle) {
    write_checkpoint(path, b, None, 0, false).unwrap();
}

/// Largest |ours − Flower's| / max(|Flower's|, 1e-2) over every value (the floor keeps
/// values that are nearly 0 from dividing by nothing).
fn worst_relative(ours: &Bundle, want: &[Vec<f32>]) -> f64 {
    ours.tensors()
        .iter()
        .zip(want)
        .flat_map(|(t, w)| {
            let t = t.to_f32().into_owned();
            t.iter()
                .zip(w)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs() / f64::from(b.abs()).max(1e-2))
                .collect::<Vec<_>>()
        })
        .fold(0.0, f64::max)
}

#[test]
fn aggregate_matches_flower_for_three_chained_rounds() {
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    let specs: Vec<(String, Vec<usize>)> = fixture["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"].as_array().unwrap();
            (
                t["name"].as_str().unwrap().to_string(),
                shape.iter().map(|d| d.as_u64().unwrap() as usize).collect(),
            )
        })
        .collect();
    let counts: Vec<u64> = fixture["num_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    let initial: Vec<Vec<f32>> = fixture["initial"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let offsets = fixture["offsets"].as_array().unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    let names: std::collections::BTreeSet<&str> = cases
        .iter()
        .map(|c| c["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");

    let mut report = Vec::new();
    for case in cases {
        let strategy = case["strategy"].as_str().unwrap();
        let params: Vec<String> = case["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.safetensors");
        let mut model = initial.clone();
        let mut worst: f64 = 0.0;
        for (r, want) in case["rounds"].as_array().unwrap().iter().enumerate() {
            let want: Vec<Vec<f32>> = want.as_array().unwrap().iter().map(floats).collect();
            let current = dir.path().join(format!("current{r}.safetensors"));
            write(&current, &bundle(&specs, &model));
            let mut cmd = Command::new(BIN);
            cmd.args(["aggregate", "--strategy", strategy]);
            for p in &params {
                cmd.args(["--param", p]);
            }
            for (d, n) in counts.iter().enumerate() {
                let device: Vec<Vec<f32>> = model
                    .iter()
                    .zip(offsets[r][d].as_array().unwrap())
                    .map(|(m, o)| m.iter().zip(floats(o)).map(|(a, b)| a + b).collect())
                    .collect();
                let path = dir.path().join(format!("r{r}d{d}.safetensors"));
                write(&path, &bundle(&specs, &device));
                cmd.arg("--update").arg(format!("{}:{n}", path.display()));
            }
            let out = dir.path().join(format!("next{r}.safetensors"));
            cmd.arg("--current").arg(&current);
            cmd.arg("--state").arg(&state).arg("--out").arg(&out);
            let run = cmd.output().unwrap();
            assert!(
                run.status.success(),
                "{strategy} {params:?} round {r}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let (next, _) = read_checkpoint(&out, None).unwrap();
            worst = worst.max(worst_relative(&next, &want));
            model = next
                .tensors()
                .iter()
                .map(|t| t.to_f32().into_owned())
                .collect();
        }
        report.push(format!(
            "{strategy} {params:?}: worst relative difference {worst:.2e}"
        ));
        assert!(worst <= 1e-6, "{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}
