//! Gaussian noise for the server's sum, from a cryptographically secure generator.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

/// Where noise comes from. ChaCha20 is a CSPRNG: seeded from the operating system it is
/// what a deployment uses; a simulation may seed it to make runs repeatable (and says so).
#[derive(Debug)]
pub struct NoiseSource {
    rng: ChaCha20Rng,
    seeded: bool,
}

impl NoiseSource {
    /// Seeded from the operating system's entropy.
    pub fn from_os() -> Self {
        NoiseSource {
            rng: ChaCha20Rng::from_os_rng(),
            seeded: false,
        }
    }

    /// Seeded for a repeatable simulation: not private against anyone who knows the seed.
    pub fn seeded(seed: u64) -> Self {
        NoiseSource {
            rng: ChaCha20Rng::seed_from_u64(seed),
            seeded: true,
        }
    }

    /// Whether this source was seeded (and so is only fit for simulation).
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    /// One draw of N(0, std²).
    pub fn gaussian(&mut self, std: f64) -> f64 {
        let n: f64 = self.rng.sample(StandardNormal);
        n * std
    }

    /// Adds N(0, std²) to every value.
    pub fn add_gaussian(&mut self, values: &mut [f64], std: f64) {
        if std > 0.0 {
            for v in values {
                *v += self.gaussian(std);
            }
        }
    }

    /// The generator itself, for samplers that need raw draws (discrete Gaussian).
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The noise has mean 0 and the stated variance: with n draws the sample variance's
    /// standard error is σ²·√(2/n); the bounds are 5 of those.
    #[test]
    fn noise_has_the_stated_variance() {
        let (n, std) = (200_000usize, 3.5f64);
        let mut v = vec![10.0f64; n];
        NoiseSource::seeded(7).add_gaussian(&mut v, std);
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se = std * std * (2.0 / n as f64).sqrt();
        assert!((var - std * std).abs() < 5.0 * se, "variance {var}");
        assert!(
            (mean - 10.0).abs() < 5.0 * std / (n as f64).sqrt(),
            "mean {mean}"
        );
        let mut a = vec![0.0; 4];
        let mut b = vec![0.0; 4];
        NoiseSource::from_os().add_gaussian(&mut a, 1.0);
        NoiseSource::from_os().add_gaussian(&mut b, 1.0);
        assert_ne!(a, b, "two OS-seeded sources draw different noise");
    }
}
