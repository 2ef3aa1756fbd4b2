//! Applying an adapter at inference: the low-rank update next to the base product, without
//! ever forming `B·A` or touching the quantized base.

use super::{LoraAdapter, LoraModule};
use crate::llama::ggml_math::{mul_mat_dot_f32, use_fma};
use crate::llama::{AdapterFitError, LlamaConfig, Proj, ProjectionAdapter};

/// The decoder applies a LoRA adapter through this: `y += (alpha/r)·(x·Aᵀ)·Bᵀ`.
impl ProjectionAdapter for LoraAdapter {
    fn check_fits(&self, cfg: &LlamaConfig) -> Result<(), AdapterFitError> {
        Ok(self.validate(cfg)?)
    }

    fn add_delta(&self, layer: usize, proj: Proj, x: &[f32], y: &mut [f32]) {
        if let Some(m) = self.module(layer, proj) {
            add_delta(m, self.scale(), x, y);
        }
    }
}

/// `y += scale · (x·Aᵀ)·Bᵀ` for every row of `x` (`[n × in]`) and `y` (`[n × out]`), in
/// the float operations of llama.cpp's batched CPU path (`mul_mat(B, mul_mat(A, x))`, then
/// `scale`, then `add`), so an adapted model's logits match llama.cpp's as the base's do.
pub fn add_delta(m: &LoraModule, scale: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len() / m.in_dim, y.len() / m.out_dim);
    #[cfg(target_arch = "x86_64")]
    if use_fma() {
        #[target_feature(enable = "avx2,fma")]
        fn with_fma(m: &LoraModule, scale: f32, x: &[f32], y: &mut [f32]) {
            add_delta_impl(m, scale, x, y);
        }
        // SAFETY: `use_fma` holds only on CPUs with AVX2 and FMA.
        #[allow(unsafe_code)]
        return unsafe { with_fma(m, scale, x, y) };
    }
    add_delta_impl(m, scale, x, y);
}

#[inline(always)]
fn add_delta_impl(m: &LoraModule, scale: f32, x: &[f32], y: &mut [f32]) {
    let mut u = vec![0f32; m.rank];
    for (xr, yr) in x.chunks_exact(m.in_dim).zip(y.chunks_exact_mut(m.out_dim)) {
        for (uk, ar) in u.iter_mut().zip(m.a.chunks_exact(m.in_dim)) {
            *uk = mul_mat_dot_f32(ar, xr);
        }
        for (yo, br) in yr.iter_mut().zip(m.b.chunks_exact(m.rank)) {
            *yo += mul_mat_dot_f32(br, &u) * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::Proj;

    #[test]
    fn adds_the_scaled_low_rank_product() {
        // A = [[1, 0, 2]], B = [[1], [-1]]: x·Aᵀ = x0 + 2·x2, times B, times 0.5.
        let m = LoraModule {
            layer: 0,
            proj: Proj::Q,
            rank: 1,
            in_dim: 3,
            out_dim: 2,
            a: vec![1.0, 0.0, 2.0],
            b: vec![1.0, -1.0],
        };
        let x = [1.0, 5.0, 3.0, 0.0, 1.0, -1.0];
        let mut y = [10.0, 10.0, 0.0, 0.0];
        add_delta(&m, 0.5, &x, &mut y);
        assert_eq!(y, [13.5, 6.5, -1.0, 1.0]);
    }
}
