//! The privacy accountant: Rényi DP summed over rounds at a fixed set of orders, and the
//! tight conversion to (ε, δ).

use crate::PrivacyError;
use crate::rdp::{default_orders, fixed_subsampled_gaussian, poisson_subsampled_gaussian};

/// How a round's cohort is drawn, which sets the neighbouring relation the guarantee is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Each device joins independently with probability q; neighbours add or remove one
    /// device.
    Poisson,
    /// A fixed number of devices drawn without replacement (q = cohort / population);
    /// neighbours replace one device, so the noise multiplier is relative to the
    /// replace-one sensitivity (2·clip for a sum of clipped updates).
    Fixed,
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sampling::Poisson => "poisson",
            Sampling::Fixed => "fixed",
        })
    }
}

impl std::str::FromStr for Sampling {
    type Err = PrivacyError;
    fn from_str(s: &str) -> Result<Self, PrivacyError> {
        match s {
            "poisson" => Ok(Sampling::Poisson),
            "fixed" => Ok(Sampling::Fixed),
            other => Err(PrivacyError::Invalid {
                what: "sampling",
                why: format!("{other:?} is neither \"poisson\" nor \"fixed\""),
            }),
        }
    }
}

/// The noise multiplier of one Gaussian mechanism equivalent to several run on the same
/// sample (their RDP adds: z⁻² = Σ zᵢ⁻²). Adaptive clipping's count query composes with the
/// update this way.
pub fn combined_noise_multiplier(multipliers: &[f64]) -> f64 {
    multipliers
        .iter()
        .map(|z| z.powi(-2))
        .sum::<f64>()
        .powf(-0.5)
}

/// Rényi DP spent so far, per order.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        RdpAccountant { orders, rdp }
    }
}

impl RdpAccountant {
    /// An accountant with RDP already spent, as [`RdpAccountant::spent`] returned it.
    pub fn resume(spent: Vec<f64>) -> Result<Self, PrivacyError> {
        let mut a = RdpAccountant::default();
        if spent.len() != a.orders.len() || spent.iter().any(|r| r.is_nan() || *r < 0.0) {
            return Err(PrivacyError::Invalid {
                what: "saved RDP",
                why: format!(
                    "{} values (want {} non-negative numbers)",
                    spent.len(),
                    a.orders.len()
                ),
            });
        }
        a.rdp = spent;
        Ok(a)
    }

    /// The RDP spent per order, to save and [`RdpAccountant::resume`].
    pub fn spent(&self) -> &[f64] {
        &self.rdp
    }

    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Adds `rounds` runs of the Gaussian mechanism with noise multiplier `z` on a sample drawn
    /// at rate `q`.
    pub fn compose(
        &mut self,
        sampling: Sampling,
        q: f64,
        z: f64,
        rounds: u64,
    ) -> Result<(), PrivacyError> {
        self.rdp = self.after(sampling, q, z, rounds)?;
        Ok(())
    }

    /// The RDP that [`RdpAccountant::compose`] would leave, without spending it.
    pub fn after(
        &self,
        sampling: Sampling,
        q: f64,
        z: f64,
        rounds: u64,
    ) -> Result<Vec<f64>, PrivacyError> {
        check_mechanism(q, z)?;
        let per_round = |alpha: f64| match sampling {
            Sampling::Poisson => poisson_subsampled_gaussian(q, z, alpha),
            Sampling::Fixed => fixed_subsampled_gaussian(q, z, alpha),
        };
        Ok(self
            .orders
            .iter()
            .zip(&self.rdp)
            .map(|(&alpha, &r)| r + rounds as f64 * per_round(alpha))
            .collect())
    }

    /// ε at `delta` for the RDP spent so far, and the order that gives it.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64), PrivacyError> {
        epsilon(&self.orders, &self.rdp, delta)
    }
}

fn check_mechanism(q: f64, z: f64) -> Result<(), PrivacyError> {
    if !(0.0..=1.0).contains(&q) {
        return Err(PrivacyError::Invalid {
            what: "sampling rate",
            why: format!("{q} is not in [0, 1]"),
        });
    }
    if !(z.is_finite() && z >= 0.0) {
        return Err(PrivacyError::Invalid {
            what: "noise multiplier",
            why: format!("{z} is not a finite number ≥ 0"),
        });
    }
    Ok(())
}

/// (ε, optimal order) from RDP at `delta`: the conversion of Canonne, Kamath, Steinke 2020
/// (Proposition 12) / Asoodeh et al. 2020, with the KL bound δ ≤ √(1 − e^(−RDP)) giving ε = 0.
pub fn epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64), PrivacyError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::Invalid {
            what: "delta",
            why: format!("{delta} is not in (0, 1)"),
        });
    }
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(0.0));
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// The smallest noise multiplier whose ε after `rounds` rounds at rate `q` is at most
/// `target` (bisection to a relative 1e-6), and the ε it gives.
pub fn noise_for_epsilon(
    target: f64,
    sampling: Sampling,
    q: f64,
    rounds: u64,
    delta: f64,
) -> Result<(f64, f64), PrivacyError> {
    if !(target.is_finite() && target > 0.0) {
        return Err(PrivacyError::Invalid {
            what: "epsilon",
            why: format!("{target} is not a positive number"),
        });
    }
    let eps_at = |z: f64| -> Result<f64, PrivacyError> {
        let a = RdpAccountant::default();
        epsilon(&a.orders, &a.after(sampling, q, z, rounds)?, delta).map(|e| e.0)
    };
    let (mut lo, mut hi) = (1e-3, 1.0);
    while eps_at(hi)? > target {
        (lo, hi) = (hi, hi * 2.0);
        if hi > 1e6 {
            return Err(PrivacyError::Unreachable { epsilon: target });
        }
    }
    while hi / lo > 1.0 + 1e-6 {
        let mid = (lo * hi).sqrt();
        if eps_at(mid)? > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((hi, eps_at(hi)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without sampling, T rounds of the Gaussian mechanism are one with multiplier z/√T, and
    /// ε grows with T, shrinks with z, δ and q.
    #[test]
    fn composition_and_monotonicity() {
        let eps = |s, q, z, t, d| {
            let mut a = RdpAccountant::default();
            a.compose(s, q, z, t).unwrap();
            a.epsilon(d).unwrap().0
        };
        let four = eps(Sampling::Poisson, 1.0, 2.0, 4, 1e-5);
        let one = eps(Sampling::Poisson, 1.0, 1.0, 1, 1e-5);
        assert!((four - one).abs() < 1e-12, "{four} vs {one}");
        for s in [Sampling::Poisson, Sampling::Fixed] {
            let base = eps(s, 0.01, 1.0, 100, 1e-5);
            assert!(eps(s, 0.01, 1.0, 200, 1e-5) > base);
            assert!(eps(s, 0.01, 2.0, 100, 1e-5) < base);
            assert!(eps(s, 0.001, 1.0, 100, 1e-5) < base);
            assert!(eps(s, 0.01, 1.0, 100, 1e-3) < base);
        }
        assert!(RdpAccountant::default().epsilon(0.0).is_err());
        assert!(
            RdpAccountant::default()
                .compose(Sampling::Poisson, 1.5, 1.0, 1)
                .is_err()
        );
    }

    #[test]
    fn calibrated_noise_reaches_the_target_and_no_less() {
        let (z, got) = noise_for_epsilon(2.0, Sampling::Poisson, 0.01, 1000, 1e-6).unwrap();
        assert!(got <= 2.0 && got > 1.99, "{z} gives {got}");
        let mut a = RdpAccountant::default();
        a.compose(Sampling::Poisson, 0.01, z * 0.999, 1000).unwrap();
        assert!(a.epsilon(1e-6).unwrap().0 > 2.0);
    }

    #[test]
    fn resume_checks_what_it_restores() {
        let mut a = RdpAccountant::default();
        a.compose(Sampling::Fixed, 0.1, 1.0, 3).unwrap();
        let b = RdpAccountant::resume(a.spent().to_vec()).unwrap();
        assert_eq!(a, b);
        assert!(RdpAccountant::resume(vec![0.0; 3]).is_err());
        assert!((combined_noise_multiplier(&[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-15);
    }
}
