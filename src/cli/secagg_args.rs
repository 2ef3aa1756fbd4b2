//! The secure-aggregation flags shared by `server`, `simulate` and `bench overhead`.

use std::time::Duration;

use clap::Args;
use fedtune_server::SecAggSettings;

/// Secure aggregation (SecAgg+): the server sees only the cohort's sum of updates.
#[derive(Debug, Args, Clone, Default)]
pub struct SecAggArgs {
    /// Aggregate securely: each update goes up quantized and masked, and only the cohort's
    /// sum can be unmasked (needs a cohort of at least 3).
    #[arg(long)]
    pub secagg: bool,
    /// Neighbours each device shares its secrets with (k) [default: ≈ 3·log2(cohort)].
    #[arg(long, value_name = "K", requires = "secagg")]
    pub secagg_neighbours: Option<usize>,
    /// Shares that reconstruct a secret (t); fewer survivors abandon the round
    /// [default: k/2 + 1].
    #[arg(long, value_name = "T", requires = "secagg")]
    pub secagg_threshold: Option<usize>,
    /// Update values are clipped to [-C, C] before quantization [default: 1].
    #[arg(long, value_name = "C", requires = "secagg")]
    pub secagg_clip: Option<f32>,
    /// Quantization bits per value [default: 16].
    #[arg(long, value_name = "B", requires = "secagg")]
    pub secagg_bits: Option<u32>,
    /// How long advertising keys, sharing and unmasking may each take [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration, requires = "secagg")]
    pub secagg_stage_timeout: Option<Duration>,
}

impl SecAggArgs {
    /// The settings, when `--secagg` is given.
    pub fn settings(&self) -> Option<SecAggSettings> {
        self.secagg.then(|| self.apply(SecAggSettings::default()))
    }

    /// `base` with the flags given laid over it.
    pub fn apply(&self, base: SecAggSettings) -> SecAggSettings {
        SecAggSettings {
            neighbours: self.secagg_neighbours.or(base.neighbours),
            threshold: self.secagg_threshold.or(base.threshold),
            clip: self.secagg_clip.unwrap_or(base.clip),
            bits: self.secagg_bits.unwrap_or(base.bits),
            stage_timeout: self.secagg_stage_timeout.unwrap_or(base.stage_timeout),
        }
    }
}
