//! Re-quantizing a model file, as llama.cpp's `llama-quantize` does: every weight matrix to
//! one format, norms and other vectors kept as they are; optionally changing some matrices on
//! the way (merging an adapter).

use super::LlamaError;
use crate::gguf::{GgufFile, GgufWriter, TensorInfo, Value};
use crate::quant::{self, GgmlType};

/// llama.cpp's `general.file_type` number for a model that is mostly `ty`.
pub(crate) fn file_type(ty: GgmlType) -> Option<u32> {
    Some(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Bf16 => 32,
        _ => return None,
    })
}

/// A writer holding `file` with its matrices in `ty`. `progress(i, n, name)` is called before
/// each tensor. Matrices whose rows are not whole blocks of `ty` are kept as they are.
pub fn requantize(
    file: &GgufFile,
    ty: GgmlType,
    progress: impl FnMut(usize, usize, &str),
) -> Result<GgufWriter, LlamaError> {
    rewrite(file, Some(ty), |_| None, progress)
}

/// A writer holding `file` with `delta(tensor)` (when it gives one, the tensor's full
/// `[rows × cols]` values) added to the tensors it names, stored again in their own type, and
/// with every matrix in `ty` when given (as [`requantize`]).
pub fn rewrite(
    file: &GgufFile,
    ty: Option<GgmlType>,
    mut delta: impl FnMut(&TensorInfo) -> Option<Vec<f32>>,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<GgufWriter, LlamaError> {
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata().iter() {
        w.add_kv(k, v.clone());
    }
    if let Some(ty) = ty {
        let ft = file_type(ty).ok_or_else(|| LlamaError::Metadata {
            key: "general.file_type".into(),
            problem: format!("{ty} is not a target fedtune quantizes whole models to"),
        })?;
        w.add_kv("general.file_type", Value::U32(ft));
    }
    let n = file.tensors().len();
    for (i, t) in file.tensors().iter().enumerate() {
        progress(i, n, &t.name);
        let data = file.tensor_data(t);
        let stored = match ty {
            Some(ty) if t.dims.len() >= 2 && t.row_len() % ty.block_len() == 0 => ty,
            _ => t.ty,
        };
        let bytes = match delta(t) {
            Some(d) => {
                let mut values = quant::dequantize(t.ty, data, t.n_elements() as usize)?;
                for (v, d) in values.iter_mut().zip(&d) {
                    *v += d;
                }
                quant::quantize(stored, &values)?
            }
            None if stored == t.ty => data.to_vec(),
            None => {
                let values = quant::dequantize(t.ty, data, t.n_elements() as usize)?;
                quant::quantize(stored, &values)?
            }
        };
        w.add_tensor(t.name.clone(), &t.dims, stored, bytes)?;
    }
    Ok(w)
}
