//! Model checkpoints as safetensors files, written atomically and verified by digest on load.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use fedtune_proto::{Bundle, DType, Digest, Tensor, TensorSpec};
use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};

use super::StoreError;

/// Prefix under which strategy state (optimiser moments) is stored beside the model.
const STATE_PREFIX: &str = "__strategy__.";

fn st_dtype(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::U32 => StDtype::U32,
    }
}

/// Writes `model` (and optional strategy state) to `path` via a temp file and rename; returns
/// the file's XXH3-128 digest.
pub fn write_checkpoint(
    path: &Path,
    model: &Bundle,
    state: Option<&Bundle>,
    round: u64,
    durable: bool,
) -> Result<Digest, StoreError> {
    let bad = |reason: String| StoreError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let mut views = Vec::new();
    let state_tensors = state.map(Bundle::tensors).unwrap_or_default();
    for (prefix, t) in model
        .tensors()
        .iter()
        .map(|t| ("", t))
        .chain(state_tensors.iter().map(|t| (STATE_PREFIX, t)))
    {
        let view = TensorView::new(st_dtype(t.dtype()), t.shape().to_vec(), t.data())
            .map_err(|e| bad(e.to_string()))?;
        views.push((format!("{prefix}{}", t.name()), view));
    }
    let order: Vec<String> = model
        .tensors()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let meta = HashMap::from([
        ("format".to_string(), "fedtune".to_string()),
        ("round".to_string(), round.to_string()),
        ("order".to_string(), order.join("\n")),
    ]);
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    // Streamed to disk (no in-memory copy of the file), then hashed back from the page cache.
    safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| bad(e.to_string()))?;
    canonicalize_header(&tmp).map_err(bad)?;
    let digest = digest_file(&tmp).map_err(io)?;
    if durable {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if durable && let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(digest)
}

/// Rewrites a safetensors file's JSON header in place with its keys sorted. The crate writes
/// the `__metadata__` map in a hash map's order, which differs from run to run; sorted, two
/// identical checkpoints are identical bytes (and digests). Key order means nothing to
/// readers, and the compact JSON keeps its length, so the data offsets stay as they are.
fn canonicalize_header(path: &Path) -> Result<(), String> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|e| e.to_string())?;
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    // serde_json's map is ordered by key (its `preserve_order` feature is off in this tree;
    // `identical_checkpoints_are_identical_bytes` would catch it turned on).
    let mut sorted = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    if sorted.len() > len {
        return Err("the sorted header is longer than the written one".into());
    }
    sorted.resize(len, b' ');
    f.seek(SeekFrom::Start(8)).map_err(|e| e.to_string())?;
    f.write_all(&sorted).map_err(|e| e.to_string())
}

/// Digest of a file's bytes, read in 1 MiB pieces.
fn digest_file(path: &Path) -> std::io::Result<Digest> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h = twox_hash::XxHash3_128::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(Digest(h.finish_128().to_be_bytes()));
        }
        h.write(&buf[..n]);
    }
}

/// Reads a checkpoint, checking its digest; returns the model (in its original tensor order)
/// and the strategy state, if any.
pub fn read_checkpoint(
    path: &Path,
    digest: Option<Digest>,
) -> Result<(Bundle, Option<Bundle>), StoreError> {
    let bad = |reason: String| StoreError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(want) = digest {
        let got = Digest::of(&bytes);
        if got != want {
            return Err(bad(format!(
                "digest {} does not match the recorded {}",
                got.to_hex(),
                want.to_hex()
            )));
        }
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let order: Vec<String> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("order"))
        .map(|o| o.lines().map(str::to_string).collect())
        .unwrap_or_else(|| {
            let mut names: Vec<String> = st
                .names()
                .into_iter()
                .filter(|n| !n.starts_with(STATE_PREFIX))
                .map(str::to_string)
                .collect();
            names.sort();
            names
        });
    let load = |stored: &str, name: &str| -> Result<Tensor, StoreError> {
        let view = st.tensor(stored).map_err(|e| bad(e.to_string()))?;
        let dtype = match view.dtype() {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::U32 => DType::U32,
            other => {
                return Err(bad(format!(
                    "tensor `{name}` has unsupported dtype {other:?}"
                )));
            }
        };
        let spec = TensorSpec {
            name: name.to_string(),
            dtype,
            shape: view.shape().to_vec(),
        };
        Tensor::from_bytes(spec, bytes::Bytes::copy_from_slice(view.data()))
            .map_err(|e| bad(e.to_string()))
    };
    let model = order
        .iter()
        .map(|n| load(n, n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut state_names: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| n.starts_with(STATE_PREFIX))
        .collect();
    state_names.sort();
    let state = state_names
        .iter()
        .map(|n| load(n, &n[STATE_PREFIX.len()..]))
        .collect::<Result<Vec<_>, _>>()?;
    let model = Bundle::new(model).map_err(|e| bad(e.to_string()))?;
    let state = if state.is_empty() {
        None
    } else {
        Some(Bundle::new(state).map_err(|e| bad(e.to_string()))?)
    };
    Ok((model, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keeps_order_dtypes_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let model = Bundle::new(vec![
            Tensor::from_f32("z.weight", vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
            Tensor::from_f32_as("a.bias", vec![2], &[0.5, -0.25], DType::BF16).unwrap(),
        ])
        .unwrap();
        let state = Bundle::new(vec![Tensor::from_f32("m", vec![1], &[7.0]).unwrap()]).unwrap();
        let digest = write_checkpoint(&path, &model, Some(&state), 3, true).unwrap();
        let (back, st) = read_checkpoint(&path, Some(digest)).unwrap();
        assert_eq!(back, model);
        assert_eq!(st.unwrap(), state);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_checkpoint(&path, Some(digest)).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(read_checkpoint(&path, None).is_err());
    }

    /// Two writes of the same checkpoint are the same bytes: the safetensors header's metadata
    /// comes from a hash map, whose order differs between maps (and runs) unless sorted.
    #[test]
    fn identical_checkpoints_are_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let model = Bundle::new(vec![
            Tensor::from_f32("b", vec![3], &[1.0, 2.0, 3.0]).unwrap(),
            Tensor::from_f32("a", vec![1], &[0.5]).unwrap(),
        ])
        .unwrap();
        let write = |i: usize| {
            let path = dir.path().join(format!("c{i}.safetensors"));
            let digest = write_checkpoint(&path, &model, None, 7, false).unwrap();
            (std::fs::read(&path).unwrap(), digest)
        };
        let first = write(0);
        for i in 1..24 {
            assert!(write(i) == first, "write {i} differs from the first");
        }
        let (back, _) = read_checkpoint(&dir.path().join("c0.safetensors"), Some(first.1)).unwrap();
        assert_eq!(back, model);
    }
}
