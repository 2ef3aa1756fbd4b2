//! The discrete Gaussian N_Z(0, σ²) (Canonne, Kamath, Steinke 2020, Algorithm 3: a discrete
//! Laplace proposal accepted with the Gaussian-to-Laplace ratio), for noise added in the
//! integer domain before secure aggregation (Kairouz, Liu, Steinke 2021: each of n devices
//! adds N_Z(0, σ²/n); the sum is close to N_Z(0, σ²) and the server never sees it without).
//! The Bernoulli trials use f64 probabilities rather than the paper's exact rationals: a
//! bias below 2⁻⁵⁰ per trial.

use rand::Rng;

/// The largest σ drawn from: far beyond any noise a 32-bit secure sum can carry, and small
/// enough that no step of the sampler can overflow.
pub const MAX_SIGMA: f64 = (1u64 << 40) as f64;

/// One draw from N_Z(0, σ²); 0 when σ is 0 (or not a number), σ capped at [`MAX_SIGMA`].
pub fn sample(sigma: f64, rng: &mut impl Rng) -> i64 {
    if sigma.is_nan() || sigma <= 0.0 {
        return 0;
    }
    let sigma = sigma.min(MAX_SIGMA);
    let t = sigma.floor() + 1.0;
    let s2 = sigma * sigma;
    loop {
        let y = discrete_laplace(t, rng);
        let d = y.unsigned_abs() as f64 - s2 / t;
        if bernoulli(rng, (-(d * d) / (2.0 * s2)).exp()) {
            return y;
        }
    }
}

/// A draw from the discrete Laplace with scale t: P(y) ∝ e^(−|y|/t).
fn discrete_laplace(t: f64, rng: &mut impl Rng) -> i64 {
    let tu = t as u64;
    loop {
        let u = rng.random_range(0..tu);
        if !bernoulli(rng, (-(u as f64) / t).exp()) {
            continue;
        }
        let mut v = 0u64;
        while bernoulli(rng, (-1f64).exp()) {
            v += 1;
        }
        // v is geometric with mean 0.58: a product past 2^62 is never drawn in practice, and
        // is redrawn if it were.
        let Some(x) = tu
            .checked_mul(v)
            .and_then(|tv| tv.checked_add(u))
            .filter(|&x| x < 1 << 62)
        else {
            continue;
        };
        let x = x as i64;
        let negative: bool = rng.random();
        if negative && x == 0 {
            continue;
        }
        return if negative { -x } else { x };
    }
}

fn bernoulli(rng: &mut impl Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// Kairouz et al.'s τ for a sum of n draws of N_Z(0, σ²) (Theorem 12 of "The Distributed
/// Discrete Gaussian Mechanism"): how far the sum is from one discrete Gaussian, which adds
/// τ·d/2 to the squared ε of its concentrated DP. It is below 1e-150 once σ ≥ 6, so in
/// practice the sum is as private as one Gaussian of variance nσ².
pub fn sum_tau(sigma: f64, n: u64) -> f64 {
    let s2 = sigma * sigma;
    let pi2 = std::f64::consts::PI * std::f64::consts::PI;
    10.0 * (1..n.min(100_000))
        .map(|k| (-2.0 * pi2 * s2 * k as f64 / (k as f64 + 1.0)).exp())
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Mean 0 and variance σ² (for σ ≥ 1 the discrete Gaussian's variance is σ² to within
    /// 1e-8), within 5 standard errors over 200 000 draws; integer values only by type.
    #[test]
    fn draws_have_the_stated_variance() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        for sigma in [1.5f64, 40.0] {
            let n = 200_000usize;
            let draws: Vec<f64> = (0..n).map(|_| sample(sigma, &mut rng) as f64).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let se = sigma * sigma * (2.0 / n as f64).sqrt();
            assert!(
                (var - sigma * sigma).abs() < 5.0 * se,
                "σ={sigma}: variance {var}"
            );
            assert!(
                mean.abs() < 5.0 * sigma / (n as f64).sqrt(),
                "σ={sigma}: mean {mean}"
            );
        }
        assert_eq!(sample(0.0, &mut rng), 0);
        assert!(sum_tau(6.0, 1000) < 1e-150 && sum_tau(0.5, 10) > 0.1);
    }
}
