//! Exponential backoff with jitter for retries.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Retry policy: waits `initial · multiplierⁿ` (capped at `max`), each jittered ±50%, for as
/// long as `give_up_after` allows (a phone outlives a server restart: by default it never
/// gives up).
#[derive(Clone, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// How long an operation may keep failing before the device gives up (`None`: never).
    pub give_up_after: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            give_up_after: None,
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32, rng: &mut ChaCha8Rng) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(30) as i32);
        let capped = base.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * rng.random_range(0.5..1.5))
    }
}

/// A generator seeded by a client id and a seed, so simulations replay per client.
pub fn client_rng(client_id: &str, seed: u64) -> ChaCha8Rng {
    let h = client_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    ChaCha8Rng::seed_from_u64(h ^ seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            give_up_after: None,
        };
        let mut rng = client_rng("c", 0);
        // Many draws: every wait within ±50% of its base (100 ms, then capped at 1 s), and the
        // jitter really spread over that range, not one value.
        for (attempt, base) in [(0, 100.0), (1, 200.0), (10, 1000.0)] {
            let waits: Vec<f64> = (0..500)
                .map(|_| b.delay(attempt, &mut rng).as_secs_f64() * 1000.0)
                .collect();
            let (lo, hi) = waits
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &w| (l.min(w), h.max(w)));
            assert!(
                lo >= 0.5 * base && hi <= 1.5 * base,
                "{attempt}: {lo}..{hi}"
            );
            assert!(
                lo < 0.6 * base && hi > 1.4 * base,
                "{attempt}: spread {lo}..{hi}"
            );
        }
        // Two devices with other ids wait differently (no synchronised retry storms).
        let mut other = client_rng("d", 0);
        assert_ne!(b.delay(3, &mut client_rng("c", 0)), b.delay(3, &mut other));
    }
}
