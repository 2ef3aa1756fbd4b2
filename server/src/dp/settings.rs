//! How a federation is made differentially private (user-level DP-FedAvg): the noise, the clip
//! norm and how it adapts, the δ the guarantee is stated at, and the budget a run may spend.

use fedtune_privacy::adaptive_clip::AdaptiveClip;

/// Differential-privacy settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DpSettings {
    /// z: the standard deviation of the noise on the sum of clipped updates, over the clip
    /// norm (the noise on the mean is z·C/K).
    pub noise_multiplier: f64,
    /// C: the L2 norm every device's whole update is clipped to (the starting norm when it
    /// adapts).
    pub clip: f64,
    /// Adaptive clipping (the norm follows a quantile of update norms); `None`: C is fixed.
    pub adaptive: Option<AdaptiveClip>,
    /// δ of the reported (ε, δ); `None`: 1/N^1.1 for the N devices registered when the first
    /// round opens (then kept).
    pub delta: Option<f64>,
    /// The server opens no round whose commit would take ε past this; it finishes instead.
    pub max_epsilon: Option<f64>,
    /// With secure aggregation: each device adds its share of the noise (discrete Gaussian,
    /// in the integer domain) before masking, so no un-noised sum ever exists.
    pub distributed: bool,
    /// Seeds the server's noise (simulation only: noise anyone can regenerate protects
    /// nothing); `None` draws it from the operating system.
    pub noise_seed: Option<u64>,
}

impl Default for DpSettings {
    fn default() -> Self {
        DpSettings {
            noise_multiplier: 1.0,
            clip: 0.1,
            adaptive: None,
            delta: None,
            max_epsilon: None,
            distributed: false,
            noise_seed: None,
        }
    }
}

impl DpSettings {
    /// Why these settings cannot run, if they cannot.
    pub fn check(&self, secagg: bool) -> Result<(), String> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.noise_multiplier) {
            return Err(format!(
                "noise multiplier {} is not a positive number",
                self.noise_multiplier
            ));
        }
        if !positive(self.clip) {
            return Err(format!("clip {} is not a positive number", self.clip));
        }
        if let Some(d) = self.delta
            && !(d > 0.0 && d < 1.0)
        {
            return Err(format!("delta {d} is not in (0, 1)"));
        }
        if let Some(e) = self.max_epsilon
            && !positive(e)
        {
            return Err(format!("max epsilon {e} is not a positive number"));
        }
        if let Some(a) = &self.adaptive {
            if !(0.0..=1.0).contains(&a.target_quantile) {
                return Err(format!(
                    "target quantile {} is not in [0, 1]",
                    a.target_quantile
                ));
            }
            if !positive(a.learning_rate) {
                return Err(format!(
                    "clip learning rate {} is not positive",
                    a.learning_rate
                ));
            }
            if let Some(s) = a.count_stddev
                && !positive(s)
            {
                return Err(format!("count noise {s} is not a positive number"));
            }
        }
        if self.distributed && !secagg {
            return Err(
                "distributed noise needs secure aggregation (--secagg): without it the server \
                 sees each device's noised update"
                    .into(),
            );
        }
        Ok(())
    }

    /// δ for a population of `n` devices when none was set: 1/n^1.1.
    pub fn delta_for(&self, n: usize) -> f64 {
        self.delta
            .unwrap_or_else(|| 1.0 / (n.max(2) as f64).powf(1.1))
    }
}
