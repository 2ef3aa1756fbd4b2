//! The differential-privacy flags shared by `server` and `simulate`.

use clap::Args;
use fedtune_server::{AdaptiveClip, DpSettings};

/// User-level differential privacy (DP-FedAvg): clipped updates, Gaussian noise on their sum,
/// ε reported after every round.
#[derive(Debug, Args, Clone, Default)]
pub struct DpArgs {
    /// Turn on differential privacy with this noise multiplier z: noise of standard deviation
    /// z·C on the sum of clipped updates (z·C/K on the mean).
    #[arg(long, value_name = "Z")]
    pub dp_noise_multiplier: Option<f64>,
    /// L2 norm C each device's whole update is clipped to (the starting norm with
    /// --dp-adaptive-clip) [default: 0.1].
    #[arg(long, value_name = "C", requires = "dp_noise_multiplier")]
    pub dp_clip: Option<f64>,
    /// Adapt C towards a quantile of the update norms (Andrew et al. 2021), from a noised
    /// count of the updates within it.
    #[arg(long, requires = "dp_noise_multiplier")]
    pub dp_adaptive_clip: bool,
    /// The quantile of update norms C follows [default: 0.5].
    #[arg(long, value_name = "GAMMA", requires = "dp_adaptive_clip")]
    pub dp_target_quantile: Option<f64>,
    /// Geometric step of C per round [default: 0.2].
    #[arg(long, value_name = "ETA", requires = "dp_adaptive_clip")]
    pub dp_clip_lr: Option<f64>,
    /// Noise on the count of updates within C [default: K/20].
    #[arg(long, value_name = "SIGMA", requires = "dp_adaptive_clip")]
    pub dp_clip_count_stddev: Option<f64>,
    /// δ of the reported (ε, δ) [default: 1/N^1.1 for the N devices registered when the first
    /// round opens].
    #[arg(long, value_name = "D", requires = "dp_noise_multiplier")]
    pub dp_delta: Option<f64>,
    /// Stop cleanly, before any round that would take ε past this.
    #[arg(long, value_name = "E", requires = "dp_noise_multiplier")]
    pub dp_max_epsilon: Option<f64>,
    /// With --secagg: each device adds its share of the noise (discrete Gaussian) before
    /// masking, so the server never holds an un-noised sum.
    #[arg(long, requires_all = ["dp_noise_multiplier", "secagg"])]
    pub dp_distributed: bool,
}

impl DpArgs {
    /// `base` (or the defaults) with the flags laid over it, when DP is on either way.
    pub fn apply(&self, base: Option<DpSettings>) -> Option<DpSettings> {
        let on = self.dp_noise_multiplier.is_some() || base.is_some();
        let base = base.unwrap_or_default();
        let adaptive = if self.dp_adaptive_clip || base.adaptive.is_some() {
            let a = base.adaptive.unwrap_or_default();
            Some(AdaptiveClip {
                target_quantile: self.dp_target_quantile.unwrap_or(a.target_quantile),
                learning_rate: self.dp_clip_lr.unwrap_or(a.learning_rate),
                count_stddev: self.dp_clip_count_stddev.or(a.count_stddev),
            })
        } else {
            None
        };
        on.then(|| DpSettings {
            noise_multiplier: self.dp_noise_multiplier.unwrap_or(base.noise_multiplier),
            clip: self.dp_clip.unwrap_or(base.clip),
            adaptive,
            delta: self.dp_delta.or(base.delta),
            max_epsilon: self.dp_max_epsilon.or(base.max_epsilon),
            distributed: self.dp_distributed || base.distributed,
            noise_seed: base.noise_seed,
        })
    }
}

impl DpArgs {
    /// Lays the flags given over a job's settings.
    pub fn lay_over(&self, cfg: &mut fedtune::job::JobConfig) {
        if let Some(z) = self.dp_noise_multiplier {
            cfg.dp_noise_multiplier = z;
        }
        let set = |field: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(&mut cfg.dp_clip, self.dp_clip);
        set(&mut cfg.dp_target_quantile, self.dp_target_quantile);
        set(&mut cfg.dp_clip_lr, self.dp_clip_lr);
        set(&mut cfg.dp_clip_count_stddev, self.dp_clip_count_stddev);
        set(&mut cfg.dp_delta, self.dp_delta);
        set(&mut cfg.dp_max_epsilon, self.dp_max_epsilon);
        cfg.dp_adaptive_clip |= self.dp_adaptive_clip;
        cfg.dp_distributed |= self.dp_distributed;
    }
}
