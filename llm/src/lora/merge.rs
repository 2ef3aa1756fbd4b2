//! Merging an adapter into its base: `W' = W + (alpha/r)·B·A` for every adapted projection,
//! written as a GGUF model that any llama.cpp-compatible runtime loads without the adapter.

use super::{LoraAdapter, LoraError};
use crate::gguf::GgufWriter;
use crate::llama::{LlamaModel, rewrite};
use crate::quant::GgmlType;

/// A writer holding `model` with `adapter` merged in. Adapted matrices are dequantized, summed
/// and quantized again (to `ty` if given, else to their own format); with `ty` every other
/// matrix is re-quantized too, as `fedtune quantize` does.
pub fn merge(
    model: &LlamaModel,
    adapter: &LoraAdapter,
    ty: Option<GgmlType>,
    progress: impl FnMut(usize, usize, &str),
) -> Result<GgufWriter, LoraError> {
    adapter.validate(&model.cfg)?;
    let scale = adapter.scale();
    let writer = rewrite(
        model.file(),
        ty,
        |t| {
            let m = adapter.modules.iter().find(|m| m.name() == t.name)?;
            // delta[o][i] = scale · Σ_k B[o][k]·A[k][i]
            let mut delta = vec![0f32; m.out_dim * m.in_dim];
            for (drow, brow) in delta
                .chunks_exact_mut(m.in_dim)
                .zip(m.b.chunks_exact(m.rank))
            {
                for (&bk, arow) in brow.iter().zip(m.a.chunks_exact(m.in_dim)) {
                    for (d, &a) in drow.iter_mut().zip(arow) {
                        *d += scale * bk * a;
                    }
                }
            }
            Some(delta)
        },
        progress,
    )?;
    Ok(writer)
}
