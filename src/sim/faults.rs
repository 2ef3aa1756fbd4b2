//! Seeded fault injection for simulated devices.

use std::time::Duration;

use fedtune_client::runtime::client_rng;
use fedtune_client::{FaultPlan, Faults};
use rand::Rng;

/// Probabilities of each misbehaviour per client and round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultRates {
    pub drop_before_download: f64,
    pub drop_during_download: f64,
    pub drop_during_upload: f64,
    /// Share of clients that are slowed by `straggler_delay` in a round.
    pub straggler: f64,
    pub straggler_delay: Duration,
}

impl FaultRates {
    pub fn is_none(&self) -> bool {
        self.drop_before_download == 0.0
            && self.drop_during_download == 0.0
            && self.drop_during_upload == 0.0
            && self.straggler == 0.0
    }
}

/// Draws each (client, round)'s faults from a seeded generator, so a run replays exactly.
#[derive(Clone, Debug)]
pub struct SeededFaults {
    pub rates: FaultRates,
    pub seed: u64,
}

impl Faults for SeededFaults {
    fn plan(&self, client_id: &str, round: u64) -> FaultPlan {
        let mut rng = client_rng(
            client_id,
            self.seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let r = &self.rates;
        let mut plan = FaultPlan::default();
        let draw: f64 = rng.random();
        if draw < r.drop_before_download {
            plan.drop_before_download = true;
        } else if draw < r.drop_before_download + r.drop_during_download {
            plan.drop_during_download = Some(1);
        } else if draw < r.drop_before_download + r.drop_during_download + r.drop_during_upload {
            plan.drop_during_upload = Some(1);
        }
        if rng.random::<f64>() < r.straggler {
            plan.delay = Some(r.straggler_delay);
        }
        plan
    }
}
