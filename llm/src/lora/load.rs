//! Opening an adapter in either format, told apart by the path.

use std::io::Read;
use std::path::Path;

use super::{LoraAdapter, LoraError, gguf_adapter, peft};
use crate::llama::LlamaConfig;

/// Reads the adapter at `path` for a base of `cfg`: a GGUF LoRA file (starts with `GGUF`), or
/// a PEFT directory (or its `adapter_model.safetensors`).
pub fn load(path: &Path, cfg: &LlamaConfig) -> Result<LoraAdapter, LoraError> {
    if path.is_file() && starts_with_gguf_magic(path)? {
        gguf_adapter::load(path, cfg)
    } else if path.exists() {
        peft::load(path, cfg)
    } else {
        Err(LoraError::Io {
            path: path.to_path_buf(),
            op: "open",
            source: std::io::ErrorKind::NotFound.into(),
        })
    }
}

/// The base model recorded in the adapter at `path` when it was written (PEFT's
/// `base_model_name_or_path`, or fedtune's key in a GGUF adapter), if any.
pub fn recorded_base(path: &Path) -> Option<String> {
    if path.is_file() && starts_with_gguf_magic(path).ok()? {
        let file = crate::gguf::GgufFile::open(path).ok()?;
        let base = file
            .metadata()
            .get_str(gguf_adapter::BASE_MODEL_KEY)
            .ok()??;
        return Some(base.to_string());
    }
    let dir = if path.is_file() { path.parent()? } else { path };
    let text = std::fs::read_to_string(dir.join(peft::CONFIG_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("base_model_name_or_path")?
        .as_str()
        .map(str::to_string)
}

fn starts_with_gguf_magic(path: &Path) -> Result<bool, LoraError> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|source| LoraError::Io {
        path: path.to_path_buf(),
        op: "open",
        source,
    })?;
    Ok(f.read_exact(&mut magic).is_ok() && &magic == b"GGUF")
}
