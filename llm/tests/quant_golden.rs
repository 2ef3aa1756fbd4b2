//! Bit-exact checks of `fedtune_llm::quant` against gguf-py (llama.cpp's Python package).
//!
//! The fixtures in `tests/fixtures/quant/` are made by `scripts/reference/golden_quants.py`
//! (see its header for the format and how to regenerate them): gguf-py for everything it
//! implements, ggml's C reference (through llama-cpp-python's libggml-base) for the activation
//! formats Q8_1 and Q8_K, which gguf-py lacks. Every case must match to the bit: f32 results
//! are compared as bit patterns, so a NaN matches only the same NaN.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fedtune_llm::quant::*;

#[derive(Debug)]
struct Case {
    name: String,
    ty: GgmlType,
    op: String,
    n: usize,
    input: Vec<u8>,
    expected: Vec<u8>,
    reference: String,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn load_cases() -> Vec<Case> {
    let dir = fixtures_dir();
    let index = std::fs::read_to_string(dir.join("index.tsv"))
        .expect("fixtures missing: run scripts/reference/golden_quants.py");
    index
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 7, "bad index line: {line:?}");
            let read = |file: &str| std::fs::read(dir.join(file)).expect(file);
            Case {
                name: f[0].to_owned(),
                ty: GgmlType::from_name(f[1]).unwrap_or_else(|| panic!("unknown type {}", f[1])),
                op: f[2].to_owned(),
                n: f[3].parse().expect("n"),
                input: read(f[4]),
                expected: read(f[5]),
                reference: f[6].to_owned(),
            }
        })
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Compares f32 results by bit pattern; returns a description of the first few mismatches.
fn diff_f32(got: &[f32], want: &[f32], block_len: usize) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} values, expected {}", got.len(), want.len()));
    }
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
        .take(5)
        .map(|(i, (g, w))| {
            format!(
                "value {i} (block {}): got {g:e} ({:#010x}), reference {w:e} ({:#010x})",
                i / block_len,
                g.to_bits(),
                w.to_bits()
            )
        })
        .collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}

fn diff_bytes(got: &[u8], want: &[u8], block_bytes: usize) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} bytes, expected {}", got.len(), want.len()));
    }
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .take(5)
        .map(|(i, (g, w))| {
            format!(
                "byte {i} (block {}, offset {}): got {g:#04x}, reference {w:#04x}",
                i / block_bytes,
                i % block_bytes
            )
        })
        .collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}

fn run(case: &Case) -> Option<String> {
    match case.op.as_str() {
        "dequantize" => {
            let want = f32s(&case.expected);
            let got = match dequantize(case.ty, &case.input, case.n) {
                Ok(v) => v,
                Err(e) => return Some(format!("error: {e}")),
            };
            // The row form must agree with the convenience form.
            let mut row = vec![0f32; case.n];
            if let Err(e) = dequantize_row(case.ty, &case.input, &mut row) {
                return Some(format!("dequantize_row error: {e}"));
            }
            diff_f32(&got, &want, case.ty.block_len())
                .or_else(|| diff_f32(&row, &want, case.ty.block_len()))
        }
        "quantize" => {
            let x = f32s(&case.input);
            assert_eq!(x.len(), case.n, "{}: input length", case.name);
            let got = match quantize(case.ty, &x) {
                Ok(v) => v,
                Err(e) => return Some(format!("error: {e}")),
            };
            let mut row = vec![0u8; case.expected.len()];
            if let Err(e) = quantize_row(case.ty, &x, &mut row) {
                return Some(format!("quantize_row error: {e}"));
            }
            diff_bytes(&got, &case.expected, case.ty.block_bytes())
                .or_else(|| diff_bytes(&row, &case.expected, case.ty.block_bytes()))
        }
        other => panic!("{}: unknown op {other}", case.name),
    }
}

#[test]
fn matches_reference_bit_for_bit() {
    let cases = load_cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            run(c).map(|d| format!("{} ({} {} vs {}): {d}", c.name, c.op, c.ty, c.reference))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases differ from the reference:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The fixtures cover what the module promises, so a truncated fixture set fails loudly.
#[test]
fn fixtures_cover_every_reference_format() {
    let have: BTreeSet<(String, String)> = load_cases()
        .into_iter()
        .map(|c| (c.ty.name().to_owned(), c.op))
        .collect();
    let dequantized = [
        "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k",
        "q6_k", "q8_k",
    ];
    let quantized = [
        "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q8_k",
    ];
    for (names, op) in [
        (&dequantized[..], "dequantize"),
        (&quantized[..], "quantize"),
    ] {
        for name in names {
            assert!(
                have.contains(&((*name).to_owned(), op.to_owned())),
                "no golden {op} case for {name}"
            );
        }
    }
}

/// Golden inputs with their sizes perturbed are rejected with an error, not a panic.
#[test]
fn golden_inputs_with_wrong_sizes_are_errors() {
    for c in load_cases() {
        if c.op != "dequantize" {
            continue;
        }
        let short = &c.input[..c.input.len() - 1];
        assert!(dequantize(c.ty, short, c.n).is_err(), "{}", c.name);
        assert!(
            dequantize(c.ty, &c.input, c.n + c.ty.block_len()).is_err(),
            "{}",
            c.name
        );
        let mut out = vec![0f32; c.n + 1];
        assert!(
            dequantize_row(c.ty, &c.input, &mut out).is_err(),
            "{}",
            c.name
        );
    }
}
