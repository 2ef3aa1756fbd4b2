//! What the decoder adds beside its base projections: an adapter seen only through a trait,
//! so the decoder knows nothing of LoRA's files, initialisation or training.

use std::fmt::Debug;

use super::{LlamaConfig, Proj};

/// Boxed so the decoder can carry any adapter's own error type.
pub type AdapterFitError = Box<dyn std::error::Error + Send + Sync>;

/// An update added next to the base product `y = x·Wᵀ` of some projections in every forward
/// pass (`crate::lora::LoraAdapter` is fedtune's).
pub trait ProjectionAdapter: Debug + Send + Sync {
    /// Checks that every tensor fits a base model of `cfg`, before the first forward pass.
    fn check_fits(&self, cfg: &LlamaConfig) -> Result<(), AdapterFitError>;

    /// `y += Δ(x)` for projection `proj` of block `layer`, every row of `x` (`[n × in]`) and
    /// `y` (`[n × out]`); nothing for a projection the adapter leaves alone.
    fn add_delta(&self, layer: usize, proj: Proj, x: &[f32], y: &mut [f32]);
}
