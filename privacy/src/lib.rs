//! Differential privacy for federated rounds (user-level DP-FedAvg, McMahan et al. 2018):
//! each device's update is clipped to an L2 norm ([`clip`]), Gaussian noise scaled to that
//! norm is added to the sum — by the server ([`gaussian`]) or, under secure aggregation, in
//! shares by the devices in the integer domain ([`discrete_gaussian`]) — and an
//! [`accountant`] turns the rounds run into (ε, δ). [`adaptive_clip`] moves the clip norm
//! towards a quantile of the update norms (Andrew et al. 2021). No network or model code.

pub mod accountant;
pub mod adaptive_clip;
pub mod clip;
pub mod discrete_gaussian;
pub mod gaussian;
mod logmath;
pub mod rdp;

pub use accountant::{RdpAccountant, Sampling, combined_noise_multiplier, noise_for_epsilon};

/// Every way this crate refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrivacyError {
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("no noise multiplier up to 10^6 reaches epsilon = {epsilon}")]
    Unreachable { epsilon: f64 },
}
