//! How a federation aggregates securely: the neighbour count, threshold and quantization a
//! round uses, sized from its cohort unless set.

use std::time::Duration;

use fedtune_secagg::quantize::Quantizer;

/// Secure-aggregation settings; `None` fields are sized from the cohort at each round.
#[derive(Clone, Debug, PartialEq)]
pub struct SecAggSettings {
    /// Neighbours each device shares with (k); default ≈ 3·log2(n), at most n − 1.
    pub neighbours: Option<usize>,
    /// Shares that reconstruct a secret (t); default k/2 + 1.
    pub threshold: Option<usize>,
    /// Update values are clipped to [−clip, clip] before quantization.
    pub clip: f32,
    /// Quantization levels: 2^bits − 1.
    pub bits: u32,
    /// How long advertising, sharing and unmasking may each take (uploads have the round's
    /// deadline).
    pub stage_timeout: Duration,
}

impl Default for SecAggSettings {
    fn default() -> Self {
        SecAggSettings {
            neighbours: None,
            threshold: None,
            clip: 1.0,
            bits: 16,
            stage_timeout: Duration::from_secs(30),
        }
    }
}

/// A round's parameters for a cohort of n.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sizing {
    pub neighbours: usize,
    pub threshold: usize,
    pub quantizer: Quantizer,
    /// Largest weight a device may give its update, so that the cohort's sum cannot wrap.
    pub max_weight: u32,
}

impl SecAggSettings {
    /// The parameters for a cohort of `n`, or why there are none.
    pub fn sizing(&self, n: usize) -> Result<Sizing, String> {
        if n < 3 {
            return Err(format!(
                "a cohort of {n} cannot aggregate securely (at least 3 devices, so that no one \
                 device's update is the sum less another's)"
            ));
        }
        let log = (n as f64).log2().ceil() as usize;
        let k = self.neighbours.unwrap_or(3 * log).clamp(2, n - 1).min(255);
        let t = self.threshold.unwrap_or(k / 2 + 1);
        if t < 2 || t > k {
            return Err(format!(
                "threshold {t} is not between 2 and the {k} neighbours"
            ));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(format!("clip {} is not a positive number", self.clip));
        }
        if !(1..=24).contains(&self.bits) {
            return Err(format!("bits {} is not in 1..=24", self.bits));
        }
        let quantizer = Quantizer {
            clip: self.clip,
            bits: self.bits,
        };
        let levels = (1u64 << self.bits) - 1;
        let max_weight = (u64::from(u32::MAX) - 1) / (n as u64 * levels);
        if max_weight == 0 {
            return Err(format!(
                "{} bits are too many for a cohort of {n}: the sum would wrap (use at most {})",
                self.bits,
                (u64::from(u32::MAX) / n as u64).ilog2()
            ));
        }
        Ok(Sizing {
            neighbours: k,
            threshold: t,
            quantizer,
            max_weight: max_weight.min(u64::from(u32::MAX)) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_grow_with_the_cohort_and_never_let_the_sum_wrap() {
        let s = SecAggSettings::default();
        let small = s.sizing(12).unwrap();
        assert_eq!((small.neighbours, small.threshold), (11, 6));
        let mid = s.sizing(100).unwrap();
        assert_eq!((mid.neighbours, mid.threshold), (21, 11));
        let big = s.sizing(1000).unwrap();
        assert_eq!((big.neighbours, big.threshold), (30, 16));
        for (n, z) in [(12, small), (100, mid), (1000, big)] {
            assert!(z.quantizer.fits(n as u64 * u64::from(z.max_weight)), "{n}");
            assert!(
                !z.quantizer.fits(n as u64 * u64::from(z.max_weight + 1)),
                "{n}"
            );
        }
        assert!(s.sizing(2).unwrap_err().contains("at least 3"));
        let bad = |f: fn(&mut SecAggSettings)| {
            let mut s = SecAggSettings::default();
            f(&mut s);
            s.sizing(50).unwrap_err()
        };
        assert!(bad(|s| s.threshold = Some(1)).contains("threshold 1"));
        assert!(bad(|s| s.threshold = Some(40)).contains("threshold 40"));
        assert!(bad(|s| s.clip = f32::NAN).contains("clip"));
        assert!(bad(|s| s.bits = 25).contains("bits 25"));
        let s = SecAggSettings {
            bits: 24,
            ..SecAggSettings::default()
        };
        assert!(s.sizing(1000).unwrap_err().contains("too many"));
    }
}
