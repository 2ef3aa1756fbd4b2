//! llama.cpp's GGUF LoRA adapter files, as `convert_lora_to_gguf.py` writes them and
//! `llama_adapter_lora_init` (`--lora`, llama-cpp-python's `lora_path=`) reads them:
//! `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`, and for each
//! adapted weight `blk.{i}.attn_q.weight` the tensors `….lora_a` (ggml dims `[in, r]`) and
//! `….lora_b` (`[r, out]`), in the GGUF model's row layout.

use std::collections::BTreeMap;
use std::path::Path;

use super::{LoraAdapter, LoraConfig, LoraError, LoraModule};
use crate::gguf::{GgufFile, GgufWriter, Metadata, Value};
use crate::llama::{LlamaConfig, Proj};
use crate::quant::{self, GgmlType};

/// Where fedtune records the base model an adapter was trained on.
pub const BASE_MODEL_KEY: &str = "fedtune.base_model";

/// A GGUF writer holding `adapter` (F32 tensors) for a base of `cfg` (`base_model`, if
/// given, is recorded under [`BASE_MODEL_KEY`]).
pub fn to_gguf(
    adapter: &LoraAdapter,
    cfg: &LlamaConfig,
    base_model: Option<&str>,
) -> Result<GgufWriter, LoraError> {
    adapter.validate(cfg)?;
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String(cfg.arch.clone()));
    w.add_kv("general.type", Value::String("adapter".into()));
    w.add_kv("general.name", Value::String("fedtune LoRA adapter".into()));
    w.add_kv("adapter.type", Value::String("lora".into()));
    w.add_kv("adapter.lora.alpha", Value::F32(adapter.config.alpha));
    w.add_kv("fedtune.lora.seed", Value::U64(adapter.config.seed));
    if let Some(base) = base_model {
        w.add_kv(BASE_MODEL_KEY, Value::String(base.to_string()));
    }
    for m in &adapter.modules {
        let (r, i, o) = (m.rank as u64, m.in_dim as u64, m.out_dim as u64);
        let bytes = |v: &[f32]| bytemuck::cast_slice(v).to_vec();
        w.add_tensor(
            format!("{}.lora_a", m.name()),
            &[i, r],
            GgmlType::F32,
            bytes(&m.a),
        )?;
        w.add_tensor(
            format!("{}.lora_b", m.name()),
            &[r, o],
            GgmlType::F32,
            bytes(&m.b),
        )?;
    }
    Ok(w)
}

/// Writes `adapter` as a GGUF LoRA file at `path` (atomically).
pub fn save(
    adapter: &LoraAdapter,
    cfg: &LlamaConfig,
    path: &Path,
    base_model: Option<&str>,
) -> Result<(), LoraError> {
    Ok(to_gguf(adapter, cfg, base_model)?.write_file(path)?)
}

/// Reads a GGUF LoRA adapter for a base of `cfg`. fedtune's adapters have one rank and the
/// same projections in every block; files that differ are refused with the reason.
pub fn load(path: &Path, cfg: &LlamaConfig) -> Result<LoraAdapter, LoraError> {
    let file = GgufFile::open(path)?;
    let md = file.metadata();
    check_kind(path, md, cfg)?;
    let (mut pairs, rank) = read_factors(path, &file, cfg)?;
    let rank = rank.ok_or_else(|| LoraError::Format {
        path: path.to_path_buf(),
        reason: "the adapter has no tensors".into(),
    })?;
    let targets: Vec<Proj> = Proj::ALL
        .into_iter()
        .filter(|&p| pairs.keys().any(|&(_, i)| i == p.index()))
        .collect();
    let alpha = match md.get_f32("adapter.lora.alpha")? {
        // llama.cpp scales by 1 when alpha is absent or 0.
        Some(a) if a != 0.0 => a,
        _ => rank as f32,
    };
    let config = LoraConfig {
        rank,
        alpha,
        dropout: 0.0,
        targets: targets.clone(),
        seed: md.get_u64("fedtune.lora.seed")?.unwrap_or(0),
    };
    let mut modules = Vec::new();
    for layer in 0..cfg.n_layers {
        for &proj in &targets {
            let name = format!("blk.{layer}.{}.weight", proj.gguf_name());
            let missing = |f: &str| LoraError::MissingTensor {
                path: path.to_path_buf(),
                name: format!("{name}.{f} (fedtune needs the same projections in every block)"),
            };
            let [a, b] = pairs.remove(&(layer, proj.index())).unwrap_or_default();
            let (out_dim, in_dim) = cfg.proj_shape(proj);
            modules.push(LoraModule {
                layer,
                proj,
                rank,
                in_dim,
                out_dim,
                a: a.ok_or_else(|| missing("lora_a"))?,
                b: b.ok_or_else(|| missing("lora_b"))?,
            });
        }
    }
    let adapter = LoraAdapter { config, modules };
    adapter.validate(cfg)?;
    Ok(adapter)
}

/// A LoRA adapter file for the base's architecture, or the reason it is not.
fn check_kind(path: &Path, md: &Metadata, cfg: &LlamaConfig) -> Result<(), LoraError> {
    let kind = md.get_str("general.type")?.unwrap_or("model");
    let adapter_type = md.get_str("adapter.type")?.unwrap_or("");
    if kind != "adapter" || adapter_type != "lora" {
        return Err(LoraError::Format {
            path: path.to_path_buf(),
            reason: format!(
                "not a LoRA adapter (general.type = {kind:?}, adapter.type = {adapter_type:?})"
            ),
        });
    }
    let arch = md.get_str("general.architecture")?.unwrap_or("");
    if arch != cfg.arch {
        return Err(LoraError::Architecture {
            path: path.to_path_buf(),
            adapter: arch.to_string(),
            model: cfg.arch.clone(),
        });
    }
    Ok(())
}

/// Factors by (layer, projection index): `[A, B]` as f32, each checked against the base's
/// shapes and for NaN/infinity; and the rank, if there is any tensor.
type Factors = BTreeMap<(usize, usize), [Option<Vec<f32>>; 2]>;

fn read_factors(
    path: &Path,
    file: &GgufFile,
    cfg: &LlamaConfig,
) -> Result<(Factors, Option<usize>), LoraError> {
    let mut pairs = Factors::new();
    let mut rank = None;
    for t in file.tensors() {
        let unexpected = |why: String| LoraError::UnexpectedTensor {
            path: path.to_path_buf(),
            name: t.name.clone(),
            why,
        };
        let (layer, proj, factor) = parse_name(&t.name)
            .ok_or_else(|| unexpected("not a lora_a/lora_b of a block's projection".into()))?;
        if layer >= cfg.n_layers {
            return Err(unexpected(format!("the base has {} blocks", cfg.n_layers)));
        }
        let (out_dim, in_dim) = cfg.proj_shape(proj);
        let r = *rank.get_or_insert(
            if factor == 0 {
                t.dims.get(1)
            } else {
                t.dims.first()
            }
            .copied()
            .unwrap_or(0) as usize,
        );
        let expected = if factor == 0 {
            [in_dim, r]
        } else {
            [r, out_dim]
        };
        if t.dims.iter().map(|&d| d as usize).ne(expected) {
            return Err(LoraError::TensorShape {
                path: path.to_path_buf(),
                name: t.name.clone(),
                expected: expected.to_vec(),
                found: t.dims.iter().map(|&d| d as usize).collect(),
            });
        }
        let values = quant::dequantize(t.ty, file.tensor_data(t), expected[0] * expected[1])?;
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(LoraError::NonFinite {
                path: path.to_path_buf(),
                name: t.name.clone(),
                index,
            });
        }
        pairs.entry((layer, proj.index())).or_default()[factor] = Some(values);
    }
    Ok((pairs, rank))
}

/// `blk.{layer}.{proj}.weight.lora_{a|b}` → (layer, proj, 0 for A / 1 for B).
fn parse_name(name: &str) -> Option<(usize, Proj, usize)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (weight, factor) = rest.rsplit_once(".lora_")?;
    let proj = Proj::parse(weight.strip_suffix(".weight")?)?;
    let factor = match factor {
        "a" => 0,
        "b" => 1,
        _ => return None,
    };
    Some((layer.parse().ok()?, proj, factor))
}
