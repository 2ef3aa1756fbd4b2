//! One private round's parameters, fixed when it opens: the clip norm, the sampling rate, the
//! noise each device adds when the noise is distributed, and the noise multiplier the
//! accountant charges.

use fedtune_privacy::combined_noise_multiplier;
use fedtune_secagg::quantize::WITHIN_SCALE;

use super::DpSettings;

/// The smallest per-device discrete Gaussian σ used: from there on the sum of the devices'
/// draws is as private as one Gaussian (Kairouz et al.'s τ is below 1e-150).
pub const MIN_DEVICE_SIGMA: f64 = 6.0;

/// A private round's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundDp {
    /// The clip norm of this round.
    pub clip: f64,
    /// The rate devices were drawn at: cohort / eligible.
    pub rate: f64,
    /// Adaptive clipping under secure aggregation: the within bit is one more masked word.
    pub within_word: bool,
    /// Updates within the clip norm: counted as they arrive, or decoded from the secure sum
    /// (then already noised when the noise is distributed).
    pub within: f64,
    /// Distributed noise: the σ, in quantization levels, each device adds per value ...
    pub device_noise: f64,
    /// ... and to its within word (in units of `WITHIN_SCALE`).
    pub device_count_noise: f64,
    /// The noise multiplier the accountant charges this round with (replace-one neighbours).
    pub accounted: f64,
}

/// What distributed noise needs of the round's secure aggregation.
#[derive(Debug, Clone, Copy)]
pub struct SecureSum {
    /// Quantization levels per unit of value.
    pub scale: f64,
    /// Levels of one value (L).
    pub levels: f64,
    /// Fewest uploads the sum is unmasked with.
    pub min_survivors: usize,
    /// The cohort drawn.
    pub cohort: usize,
    /// Values in an update (d).
    pub params: usize,
}

impl RoundDp {
    /// The parameters of a round with clip norm `clip`, drawn at `rate`, aiming at `expected`
    /// updates, aggregated by `secure` when it aggregates securely; or why it cannot run.
    pub fn new(
        s: &DpSettings,
        clip: f64,
        rate: f64,
        expected: usize,
        secure: Option<SecureSum>,
    ) -> Result<Self, String> {
        let count_stddev = s.adaptive.map(|a| a.count_stddev(expected));
        let mut round = RoundDp {
            clip,
            rate: rate.min(1.0),
            within_word: s.adaptive.is_some() && secure.is_some(),
            within: 0.0,
            device_noise: 0.0,
            device_count_noise: 0.0,
            accounted: 0.0,
        };
        // Replace-one neighbours (a fixed-size cohort): the sum's sensitivity is 2C, the
        // count's 1. In add-or-remove terms (sensitivity C, and ½ for a centred bit) the
        // multipliers are z and 2σ_b; halved for replace-one.
        let mut update_z = s.noise_multiplier;
        if let (true, Some(q)) = (s.distributed, secure) {
            let m = q.min_survivors.max(1) as f64;
            // Every device adds σ²/m, so that any sum the server may unmask (m or more
            // uploads) carries at least the stated noise.
            let total = s.noise_multiplier * clip * q.scale;
            round.device_noise = (total / m.sqrt()).max(MIN_DEVICE_SIGMA);
            if let Some(sb) = count_stddev {
                let w = f64::from(WITHIN_SCALE);
                round.device_count_noise = (sb * w / m.sqrt()).max(MIN_DEVICE_SIGMA);
            }
            // Stochastic rounding moves each value by less than one level: the sensitivity in
            // levels grows from C·scale to C·scale + √d.
            update_z = total / (clip * q.scale + (q.params as f64).sqrt());
            let n = q.cohort as f64;
            let spread = 10.0 * round.device_noise * n.sqrt();
            if n * q.levels + spread >= f64::from(i32::MAX as u32) {
                return Err(format!(
                    "distributed noise (σ = {:.0} levels per device) could wrap the secure sum \
                     of {} devices: lower the noise, the clip norm or --secagg-bits",
                    round.device_noise, q.cohort
                ));
            }
        }
        round.accounted = match count_stddev {
            Some(sb) => combined_noise_multiplier(&[update_z, 2.0 * sb]) / 2.0,
            None => update_z / 2.0,
        };
        Ok(round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_privacy::adaptive_clip::AdaptiveClip;

    #[test]
    fn accounted_multipliers() {
        let s = DpSettings {
            noise_multiplier: 2.0,
            ..DpSettings::default()
        };
        let r = RoundDp::new(&s, 0.1, 0.5, 10, None).unwrap();
        assert_eq!(r.accounted, 1.0);
        assert_eq!((r.device_noise, r.within_word), (0.0, false));
        let adaptive = DpSettings {
            adaptive: Some(AdaptiveClip::default()),
            ..s.clone()
        };
        // σ_b = 20/20 = 1: the count's multiplier 2, combined with 2: √2, halved.
        let r = RoundDp::new(&adaptive, 0.1, 0.5, 20, None).unwrap();
        assert!((r.accounted - 2f64.sqrt() / 2.0).abs() < 1e-12);
        let secure = SecureSum {
            scale: 32767.5,
            levels: 65535.0,
            min_survivors: 16,
            cohort: 20,
            params: 10_000,
        };
        let d = DpSettings {
            distributed: true,
            ..adaptive
        };
        let r = RoundDp::new(&d, 0.1, 0.5, 20, Some(secure)).unwrap();
        // zC·scale = 6553.5 levels in all, a quarter per device (m = 16).
        assert!((r.device_noise - 6553.5 / 4.0).abs() < 1e-9);
        assert!((r.device_count_noise - 1024.0 / 4.0).abs() < 1e-9);
        assert!(r.within_word);
        // Rounding inflates the sensitivity by √d = 100 levels.
        let z = 6553.5 / (3276.75 + 100.0);
        let want = combined_noise_multiplier(&[z, 2.0]) / 2.0;
        assert!((r.accounted - want).abs() < 1e-12);
        let huge = DpSettings {
            noise_multiplier: 1e5,
            ..d
        };
        assert!(RoundDp::new(&huge, 0.1, 0.5, 20, Some(secure)).is_err());
    }
}
