//! Shamir secret sharing of byte strings over GF(2^8): each byte is the constant term of its
//! own random polynomial of degree t − 1, evaluated at the holders' points (1..=255). Any t
//! shares give the secret back; fewer say nothing about it.

use rand::RngCore;

use crate::SecAggError;
use crate::gf256::{inv, mul};

/// One holder's share: its point and the polynomials' values there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub x: u8,
    pub y: Vec<u8>,
}

/// Shares of `secret` for the holders at points `xs` (distinct, non-zero), t needed.
pub fn split(
    secret: &[u8],
    xs: &[u8],
    t: usize,
    rng: &mut impl RngCore,
) -> Result<Vec<Share>, SecAggError> {
    if t < 2 || t > xs.len() {
        return Err(SecAggError::Threshold { t, n: xs.len() });
    }
    if xs.contains(&0) || has_repeats(xs) {
        return Err(SecAggError::InconsistentShares);
    }
    let mut shares: Vec<Share> = xs
        .iter()
        .map(|&x| Share {
            x,
            y: Vec::with_capacity(secret.len()),
        })
        .collect();
    let mut coeffs = vec![0u8; t - 1];
    for &byte in secret {
        rng.fill_bytes(&mut coeffs);
        for share in &mut shares {
            // Horner: ((c_{t-1} x + c_{t-2}) x + … ) x + secret
            let mut y = 0u8;
            for &c in coeffs.iter().rev() {
                y = mul(y, share.x) ^ c;
            }
            share.y.push(mul(y, share.x) ^ byte);
        }
    }
    coeffs.fill(0);
    Ok(shares)
}

/// The secret from at least `t` shares (the first t are used).
pub fn reconstruct(shares: &[Share], t: usize) -> Result<Vec<u8>, SecAggError> {
    if shares.len() < t || t == 0 {
        return Err(SecAggError::TooFewShares {
            got: shares.len(),
            t,
        });
    }
    let used = &shares[..t];
    let xs: Vec<u8> = used.iter().map(|s| s.x).collect();
    let len = used[0].y.len();
    if xs.contains(&0) || has_repeats(&xs) || used.iter().any(|s| s.y.len() != len) {
        return Err(SecAggError::InconsistentShares);
    }
    // Lagrange basis at 0: l_i = Π_{j≠i} x_j / (x_j − x_i); subtraction is xor.
    let basis: Vec<u8> = (0..t)
        .map(|i| {
            let (mut num, mut den) = (1u8, 1u8);
            for j in (0..t).filter(|&j| j != i) {
                num = mul(num, xs[j]);
                den = mul(den, xs[j] ^ xs[i]);
            }
            mul(num, inv(den))
        })
        .collect();
    Ok((0..len)
        .map(|k| {
            used.iter()
                .zip(&basis)
                .fold(0u8, |acc, (s, &l)| acc ^ mul(s.y[k], l))
        })
        .collect())
}

fn has_repeats(xs: &[u8]) -> bool {
    let mut seen = [false; 256];
    xs.iter()
        .any(|&x| std::mem::replace(&mut seen[usize::from(x)], true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn any_t_shares_reconstruct_and_fewer_fail() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let secret: Vec<u8> = (0..32).map(|i| i * 7 + 3).collect();
        let xs: Vec<u8> = (1..=9).collect();
        let shares = split(&secret, &xs, 5, &mut rng).unwrap();
        // Every 5-subset in a sliding window, reversed order too.
        for start in 0..5 {
            let mut pick: Vec<Share> = shares[start..start + 5].to_vec();
            assert_eq!(reconstruct(&pick, 5).unwrap(), secret);
            pick.reverse();
            assert_eq!(reconstruct(&pick, 5).unwrap(), secret);
        }
        // Four shares used as if five were needed: refused; used with t = 4: a wrong answer.
        assert!(reconstruct(&shares[..4], 5).is_err());
        assert_ne!(reconstruct(&shares[..4], 4).unwrap(), secret);
        assert!(split(&secret, &xs, 1, &mut rng).is_err());
        assert!(split(&secret, &[1, 2, 2], 2, &mut rng).is_err());
        assert!(split(&secret, &[0, 1, 2], 2, &mut rng).is_err());
    }

    /// t − 1 shares are uniform whatever the secret: the share at one point of two different
    /// secrets has the same distribution (a chi-squared test over the 256 byte values).
    #[test]
    fn fewer_than_t_shares_look_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut counts = [[0u32; 256]; 2];
        for (s, count) in counts.iter_mut().enumerate() {
            for _ in 0..25_600 {
                let shares = split(&[s as u8 * 0xFF], &[1, 2, 3], 2, &mut rng).unwrap();
                count[usize::from(shares[0].y[0])] += 1;
            }
        }
        for count in counts {
            let chi2: f64 = count
                .iter()
                .map(|&c| (f64::from(c) - 100.0).powi(2) / 100.0)
                .sum();
            // 255 degrees of freedom: the 0.1% tail starts near 330.
            assert!(chi2 < 330.0, "chi² {chi2}");
        }
    }
}
