//! Hugging Face PEFT adapter directories: `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, A `[r, in]`, B
//! `[out, r]`) and `adapter_config.json` with PEFT's fields, so `PeftModel.from_pretrained`
//! loads what fedtune trains, and fedtune loads what PEFT trains (plain LoRA on the projections
//! of a llama model).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::{Value, json};

use super::{LoraAdapter, LoraConfig, LoraError, LoraModule};
use crate::atomic_file::{self, AtomicWriteError};
use crate::llama::{LlamaConfig, Proj, RopeOrder};

/// The weights file in an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The configuration file in an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// PEFT's name of factor `factor` (`'A'` or `'B'`) adapting `proj` of block `layer`.
pub fn tensor_name(layer: usize, proj: Proj, factor: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{factor}.weight",
        proj.peft_parent(),
        proj.peft_name()
    )
}

/// Writes `adapter` as a PEFT directory `dir` (created if needed; both files replaced
/// atomically). `base_model` goes to `base_model_name_or_path`.
pub fn save(
    adapter: &LoraAdapter,
    cfg: &LlamaConfig,
    dir: &Path,
    base_model: Option<&str>,
) -> Result<(), LoraError> {
    adapter.validate(cfg)?;
    std::fs::create_dir_all(dir).map_err(|source| LoraError::Io {
        path: dir.to_path_buf(),
        op: "create",
        source,
    })?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for m in &adapter.modules {
        let b = match hf_row_order(cfg, m.proj) {
            Some(order) => order
                .iter()
                .flat_map(|&g| row(&m.b, m.rank, g))
                .copied()
                .collect(),
            None => m.b.clone(),
        };
        tensors.push((
            tensor_name(m.layer, m.proj, 'A'),
            vec![m.rank, m.in_dim],
            bytemuck::cast_slice(&m.a).to_vec(),
        ));
        tensors.push((
            tensor_name(m.layer, m.proj, 'B'),
            vec![m.out_dim, m.rank],
            bytemuck::cast_slice(&b).to_vec(),
        ));
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    let format_err = |reason: String| LoraError::Format {
        path: weights_path.clone(),
        reason,
    };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| format_err(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("fedtune.seed".to_string(), adapter.config.seed.to_string()),
    ]);
    let mut bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| format_err(e.to_string()))?;
    sort_header_keys(&mut bytes).map_err(format_err)?;
    write_atomic(&weights_path, &bytes)?;
    let config = config_json(&adapter.config, base_model);
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

/// Rewrites a serialized safetensors file's JSON header with its keys sorted: the crate writes
/// the metadata map in a hash map's order, which differs from run to run, and an adapter
/// written twice must be the same bytes. The compact JSON keeps its length (so the data
/// offsets hold), and key order means nothing to readers.
fn sort_header_keys(bytes: &mut [u8]) -> Result<(), String> {
    let short = || "the serialized adapter is shorter than its header".to_string();
    let len = bytes.get(..8).ok_or_else(short)?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().map_err(|_| short())?))
        .map_err(|e| e.to_string())?;
    let header = bytes.get_mut(8..8 + len).ok_or_else(short)?;
    let value: Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    // serde_json's map is ordered by key (`preserve_order` is off in this tree; the test
    // `saving_twice_writes_the_same_bytes` would catch it turned on).
    let sorted = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    if sorted.len() > len {
        return Err("the sorted header is longer than the written one".into());
    }
    header.fill(b' ');
    header[..sorted.len()].copy_from_slice(&sorted);
    Ok(())
}

/// PEFT's `adapter_config.json` for plain LoRA on a causal language model.
fn config_json(c: &LoraConfig, base_model: Option<&str>) -> Value {
    let alpha = if c.alpha.fract() == 0.0 {
        json!(c.alpha as i64)
    } else {
        json!(c.alpha)
    };
    let targets: Vec<&str> = c
        .canonical_targets()
        .iter()
        .map(|p| p.peft_name())
        .collect();
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layer_replication": null,
        "layers_pattern": null,
        "layers_to_transform": null,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_dropout": c.dropout,
        "megatron_config": null,
        "megatron_core": "megatron.core",
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": c.rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false
    })
}

/// Reads the PEFT directory `dir` (or its `adapter_model.safetensors`) as an adapter for a
/// model of `cfg`. Every tensor must adapt a projection of the base, with the base's shapes.
pub fn load(dir: &Path, cfg: &LlamaConfig) -> Result<LoraAdapter, LoraError> {
    let dir = if dir.is_file() {
        dir.parent().unwrap_or(Path::new("."))
    } else {
        dir
    };
    let config_path = dir.join(CONFIG_FILE);
    let mut config = read_config(&config_path)?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|source| LoraError::Io {
        path: path.clone(),
        op: "read",
        source,
    })?;
    let format_err = |reason: String| LoraError::Format {
        path: path.clone(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| format_err(e.to_string()))?;
    config.seed = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("fedtune.seed"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format_err(e.to_string()))?;
    let mut unused: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    let mut modules = Vec::new();
    for layer in 0..cfg.n_layers {
        for proj in config.canonical_targets() {
            let (out_dim, in_dim) = cfg.proj_shape(proj);
            let r = config.rank;
            let mut take = |factor, shape: [usize; 2]| {
                let name = tensor_name(layer, proj, factor);
                unused.retain(|n| *n != name);
                read_tensor(&st, &path, &name, shape)
            };
            let a = take('A', [r, in_dim])?;
            let mut b = take('B', [out_dim, r])?;
            if let Some(order) = hf_row_order(cfg, proj) {
                let hf = std::mem::take(&mut b);
                b = vec![0.0; hf.len()];
                for (i, &g) in order.iter().enumerate() {
                    b[g * r..][..r].copy_from_slice(row(&hf, r, i));
                }
            }
            modules.push(LoraModule {
                layer,
                proj,
                rank: r,
                in_dim,
                out_dim,
                a,
                b,
            });
        }
    }
    if let Some(name) = unused.into_iter().min() {
        return Err(LoraError::UnexpectedTensor {
            path,
            why: format!(
                "the base has {} blocks and the adapter config targets {:?}",
                cfg.n_layers,
                config
                    .canonical_targets()
                    .iter()
                    .map(|p| p.peft_name())
                    .collect::<Vec<_>>()
            ),
            name,
        });
    }
    let adapter = LoraAdapter { config, modules };
    adapter.validate(cfg)?;
    Ok(adapter)
}

/// Reads `adapter_config.json`, refusing what fedtune cannot apply exactly.
fn read_config(path: &Path) -> Result<LoraConfig, LoraError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoraError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    let bad = |reason: String| LoraError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let unsupported = |field: &str, value: &Value, why| LoraError::Unsupported {
        path: path.to_path_buf(),
        field: field.to_string(),
        value: value.to_string(),
        why,
    };
    let get = |k: &str| v.get(k).unwrap_or(&Value::Null);
    match get("peft_type").as_str() {
        Some("LORA") => {}
        _ => return Err(unsupported("peft_type", get("peft_type"), "only LORA")),
    }
    for (field, why) in [
        ("use_dora", "DoRA adapters are not supported"),
        ("use_rslora", "rank-stabilised scaling is not supported"),
        ("fan_in_fan_out", "only nn.Linear layouts"),
    ] {
        if get(field).as_bool() == Some(true) {
            return Err(unsupported(field, get(field), why));
        }
    }
    for field in ["rank_pattern", "alpha_pattern"] {
        if get(field).as_object().is_some_and(|o| !o.is_empty()) {
            return Err(unsupported(
                field,
                get(field),
                "one rank and alpha for every module",
            ));
        }
    }
    for field in ["layers_to_transform", "modules_to_save"] {
        if !get(field).is_null() {
            return Err(unsupported(
                field,
                get(field),
                "adapters on every block's projections only",
            ));
        }
    }
    if get("bias").as_str().is_some_and(|b| b != "none") {
        return Err(unsupported("bias", get("bias"), "LoRA without biases only"));
    }
    let rank = get("r")
        .as_u64()
        .ok_or_else(|| bad(format!("r = {} is not a whole number", get("r"))))?
        as usize;
    let alpha = get("lora_alpha").as_f64().ok_or_else(|| {
        bad(format!(
            "lora_alpha = {} is not a number",
            get("lora_alpha")
        ))
    })? as f32;
    let dropout = get("lora_dropout").as_f64().unwrap_or(0.0) as f32;
    let names = get("target_modules")
        .as_array()
        .ok_or_else(|| {
            unsupported(
                "target_modules",
                get("target_modules"),
                "give a list of module names such as [\"q_proj\", \"v_proj\"]",
            )
        })?
        .iter()
        .map(|n| {
            n.as_str()
                .and_then(Proj::parse)
                .ok_or_else(|| unsupported("target_modules", n, "not a llama projection"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = LoraConfig {
        rank,
        alpha,
        dropout,
        targets: names,
        seed: 0,
    };
    config.validate()?;
    Ok(config)
}

/// A tensor of `shape` as f32 (stored as F32, F16 or BF16), refusing non-finite values.
fn read_tensor(
    st: &SafeTensors,
    path: &Path,
    name: &str,
    shape: [usize; 2],
) -> Result<Vec<f32>, LoraError> {
    let view = st.tensor(name).map_err(|_| LoraError::MissingTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
    })?;
    if view.shape() != shape {
        return Err(LoraError::TensorShape {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: shape.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(LoraError::Format {
                path: path.to_path_buf(),
                reason: format!("tensor {name} is {other:?}; adapters must be F32, F16 or BF16"),
            });
        }
    };
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(LoraError::NonFinite {
            path: path.to_path_buf(),
            name: name.to_string(),
            index,
        });
    }
    Ok(values)
}

/// For the query and key projections of a normal-RoPE llama model, `order[i]` is the GGUF row
/// that Hugging Face's row `i` is: within each head, Hugging Face keeps the two rotated halves
/// apart (`[x0..x_{d/2}, y0..]`) where llama.cpp interleaves them (`[x0, y0, x1, y1, …]`).
fn hf_row_order(cfg: &LlamaConfig, proj: Proj) -> Option<Vec<usize>> {
    let heads = match proj {
        Proj::Q => cfg.n_heads,
        Proj::K => cfg.n_kv_heads,
        _ => return None,
    };
    if cfg.rope_order != RopeOrder::Normal || cfg.arch != "llama" {
        return None;
    }
    let d = cfg.head_dim;
    Some(
        (0..heads * d)
            .map(|i| {
                let (h, within) = (i / d, i % d);
                let (half, j) = (within / (d / 2), within % (d / 2));
                h * d + 2 * j + half
            })
            .collect(),
    )
}

fn row(m: &[f32], cols: usize, i: usize) -> &[f32] {
    &m[i * cols..][..cols]
}

/// Replaces `path` with `bytes` atomically.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LoraError> {
    atomic_file::write(path, |out| out.write_all(bytes)).map_err(|e| match e {
        AtomicWriteError::Io { path, op, source } => LoraError::Io { path, op, source },
        AtomicWriteError::Write(source) => LoraError::Io {
            path: path.to_path_buf(),
            op: "write",
            source,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::llama::testutil::tiny_cfg;

    /// An adapter saved twice is the same bytes: the safetensors metadata (two keys) comes from
    /// a hash map, whose order differs between maps unless the header is sorted.
    #[test]
    fn saving_twice_writes_the_same_bytes() {
        let cfg = tiny_cfg();
        let adapter =
            LoraAdapter::random(LoraConfig::new(2, &[Proj::Q, Proj::V]), &cfg, 0.1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let save_as = |i: usize| {
            let out = dir.path().join(format!("a{i}"));
            save(&adapter, &cfg, &out, Some("base")).unwrap();
            std::fs::read(out.join(WEIGHTS_FILE)).unwrap()
        };
        let first = save_as(0);
        for i in 1..24 {
            assert!(save_as(i) == first, "save {i} differs from the first");
        }
        let back = load(&dir.path().join("a0"), &cfg).unwrap();
        assert_eq!(back, adapter);
    }
}
