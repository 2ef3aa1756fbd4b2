//! Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021): the clip norm follows the
//! γ-quantile of the devices' update norms. Each device reports whether its update was within
//! the current norm; the server adds Gaussian noise (σ_b) to the count, and moves the norm
//! geometrically: C ← C · exp(−η (b̃ − γ)), where b̃ is the noised fraction within.

/// The rule's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveClip {
    /// The quantile γ of update norms the clip norm aims at (the paper's and Flower's 0.5).
    pub target_quantile: f64,
    /// The geometric step η (0.2).
    pub learning_rate: f64,
    /// Noise on the count of updates within the norm; `None` takes the expected cohort K / 20.
    pub count_stddev: Option<f64>,
}

impl Default for AdaptiveClip {
    fn default() -> Self {
        AdaptiveClip {
            target_quantile: 0.5,
            learning_rate: 0.2,
            count_stddev: None,
        }
    }
}

impl AdaptiveClip {
    /// The count noise σ_b for a cohort of `expected` updates.
    pub fn count_stddev(&self, expected: usize) -> f64 {
        self.count_stddev.unwrap_or(expected as f64 / 20.0)
    }

    /// The count's noise multiplier under add-or-remove-one neighbours: a device's bit is
    /// centred (b − ½), so its sensitivity is ½ and the multiplier 2σ_b.
    pub fn count_noise_multiplier(&self, expected: usize) -> f64 {
        2.0 * self.count_stddev(expected)
    }

    /// The next clip norm from the current one and the noised count of updates within it out
    /// of the `expected` cohort.
    pub fn next(&self, clip: f64, noised_within: f64, expected: usize) -> f64 {
        let fraction = noised_within / expected.max(1) as f64;
        clip * (-self.learning_rate * (fraction - self.target_quantile)).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::NoiseSource;

    /// On log-normal norms (median e^0 = 1, so the 0.5-quantile is 1 and the 0.8-quantile
    /// e^0.8416), the noised rule settles with the fraction within the norm ±0.05 of γ.
    #[test]
    fn settles_at_the_target_quantile() {
        for gamma in [0.5, 0.8] {
            let rule = AdaptiveClip {
                target_quantile: gamma,
                ..AdaptiveClip::default()
            };
            let k = 200;
            let mut noise = NoiseSource::seeded(3);
            let mut clip = 0.05;
            let mut fractions = Vec::new();
            for round in 0..600 {
                let within = (0..k).filter(|_| noise.gaussian(1.0).exp() <= clip).count() as f64;
                let noised = within + noise.gaussian(rule.count_stddev(k));
                if round >= 300 {
                    fractions.push(within / k as f64);
                }
                clip = rule.next(clip, noised, k);
            }
            let settled = fractions.iter().sum::<f64>() / fractions.len() as f64;
            assert!(
                (settled - gamma).abs() < 0.05,
                "γ={gamma}: settled at {settled}"
            );
        }
    }
}
