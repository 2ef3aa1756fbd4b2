//! Fault injection: how a simulated device misbehaves in a given round.

use std::time::Duration;

/// What goes wrong for one client in one round. The default is nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// The device goes offline before downloading (it never trains this round).
    pub drop_before_download: bool,
    /// The device goes offline after receiving this many bytes of the model.
    pub drop_during_download: Option<u64>,
    /// The connection breaks once after this many bytes; the device resumes the download.
    pub interrupt_download: Option<u64>,
    /// The device goes offline after sending this many upload chunks.
    pub drop_during_upload: Option<usize>,
    /// The device trains this much slower (a straggler); its upload may arrive late.
    pub delay: Option<Duration>,
}

/// Decides each client's faults per round (the simulation engine implements it, seeded).
pub trait Faults: Send + Sync + std::fmt::Debug {
    fn plan(&self, client_id: &str, round: u64) -> FaultPlan;
}
