//! `fedtune aggregate` on LoRA adapters as users hold them (PEFT directories, GGUF LoRA
//! files): FedAvg gives the example-weighted mean of every factor; FlexLoRA gives factors
//! whose product is closer to the mean of the devices' products than FedAvg's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

fn fedtune(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "fedtune {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PEFT directory's tensors: name → (shape, values).
fn peft(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// `b · a` for row-major b [out, r] and a [r, in].
fn product(b: &(Vec<usize>, Vec<f64>), a: &(Vec<usize>, Vec<f64>)) -> Vec<f64> {
    let (out, r, inn) = (b.0[0], b.0[1], a.0[1]);
    let mut p = vec![0.0; out * inn];
    for o in 0..out {
        for k in 0..r {
            for i in 0..inn {
                p[o * inn + i] += b.1[o * r + k] * a.1[k * inn + i];
            }
        }
    }
    p
}

fn dist(x: &[f64], y: &[f64]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn peft_and_gguf_adapters_merge_with_fedavg_and_flexlora() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    for s in 0..3 {
        let seed = s.to_string();
        fedtune(&[
            "bench",
            "random-adapter",
            "-m",
            "embedded",
            "--seed",
            &seed,
            "--out",
            &path(&format!("a{s}")),
        ]);
    }
    let (u1, u2) = (format!("{}:1", path("a1")), format!("{}:3", path("a2")));
    let current = path("a0");
    fedtune(&[
        "aggregate",
        "--current",
        &current,
        "--update",
        &u1,
        "--update",
        &u2,
        "--out",
        &path("avg"),
    ]);
    fedtune(&[
        "aggregate",
        "--current",
        &current,
        "--update",
        &u1,
        "--update",
        &u2,
        "--out",
        &path("avg.gguf"),
    ]);
    let flex = ["aggregate", "--strategy", "flexlora", "--current", &current];
    fedtune(
        &[
            &flex[..],
            &["--update", &u1, "--update", &u2, "--out", &path("flex")],
        ]
        .concat(),
    );

    let (a1, a2, avg, flex) = (
        peft(&dir.path().join("a1")),
        peft(&dir.path().join("a2")),
        peft(&dir.path().join("avg")),
        peft(&dir.path().join("flex")),
    );
    assert_eq!(avg.len(), a1.len());
    for (name, (shape, v)) in &avg {
        assert_eq!(shape, &a1[name].0);
        for ((x, y), z) in v.iter().zip(&a1[name].1).zip(&a2[name].1) {
            assert!(
                (x - (y + 3.0 * z) / 4.0).abs() <= 1e-6 * (1.0 + x.abs()),
                "{name}"
            );
        }
    }
    let gguf = std::fs::read(dir.path().join("avg.gguf")).unwrap();
    assert_eq!(&gguf[..4], b"GGUF");

    // Every module: FlexLoRA's product is nearer the mean product than FedAvg's.
    let mut modules = 0;
    for name in a1.keys().filter(|n| n.contains("lora_A")) {
        let b = name.replace("lora_A", "lora_B");
        let want: Vec<f64> = product(&a1[&b], &a1[name])
            .iter()
            .zip(product(&a2[&b], &a2[name]))
            .map(|(x, y)| (x + 3.0 * y) / 4.0)
            .collect();
        let flex_err = dist(&product(&flex[&b], &flex[name]), &want);
        let avg_err = dist(&product(&avg[&b], &avg[name]), &want);
        assert!(
            flex_err < avg_err,
            "{name}: flexlora {flex_err} vs fedavg {avg_err}"
        );
        modules += 1;
    }
    assert!(modules > 0);
}
