//! Differential privacy on the server (user-level DP-FedAvg, McMahan et al. 2018): every
//! update clipped to the round's norm C, Gaussian noise of standard deviation z·C on the sum,
//! divided by the fixed target K rather than the count that arrived (so that one device's
//! presence moves the mean by at most C/K), the rounds charged to an RDP accountant, and the
//! clip norm moved towards a quantile of the update norms when it adapts. The budget spent is
//! written before the round's model is, so a crash can only over-count it.

mod round;
pub mod settings;

use fedtune_privacy::clip::{Clipped, clip_scale};
use fedtune_privacy::gaussian::NoiseSource;
use fedtune_privacy::{RdpAccountant, Sampling};
use fedtune_proto::{Bundle, v1};
pub use round::{RoundDp, SecureSum};
pub use settings::DpSettings;
use tracing::info;

use crate::coordinator::{State, lock};
use crate::round::Phase;
use crate::store::Store;
use crate::strategy::Aggregate;
use crate::{Coordinator, ServerError};

const META_RDP: &str = "dp_rdp";
const META_CLIP: &str = "dp_clip";
const META_DELTA: &str = "dp_delta";

/// A federation's privacy across rounds: what the accountant has charged, the clip norm the
/// next round uses, and the noise generator.
#[derive(Debug)]
pub(crate) struct DpState {
    pub settings: DpSettings,
    accountant: RdpAccountant,
    clip: f64,
    /// Fixed when the first round opens (from the settings or the population).
    delta: Option<f64>,
    noise: NoiseSource,
}

/// What a private round reports as the server's metrics.
pub(crate) type DpMetrics = Vec<(String, f64)>;

impl DpState {
    /// The settings with what a previous run of this federation spent.
    pub fn load(settings: DpSettings, store: &Store) -> Result<Self, ServerError> {
        let bad = |why: String| ServerError::Internal(format!("saved privacy state: {why}"));
        let accountant = match store.meta(META_RDP)? {
            Some(text) => {
                let spent = text
                    .split(',')
                    .map(|v| v.parse::<f64>().map_err(|e| bad(format!("{v:?}: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                RdpAccountant::resume(spent).map_err(|e| bad(e.to_string()))?
            }
            None => RdpAccountant::default(),
        };
        let number = |key: &str| -> Result<Option<f64>, ServerError> {
            store
                .meta(key)?
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|e| bad(format!("{key} {v:?}: {e}")))
                })
                .transpose()
        };
        let clip = number(META_CLIP)?.unwrap_or(settings.clip);
        // A δ given now wins over the one fixed from the population when the run began.
        let delta = match settings.delta {
            Some(d) => Some(d),
            None => number(META_DELTA)?,
        };
        let noise = match settings.noise_seed {
            Some(seed) => NoiseSource::seeded(seed),
            None => NoiseSource::from_os(),
        };
        Ok(DpState {
            settings,
            accountant,
            clip,
            delta,
            noise,
        })
    }

    /// ε for the rounds charged so far (0 before the first) and δ (once fixed).
    pub fn spent(&self) -> (f64, f64) {
        let delta = self.delta.unwrap_or(f64::NAN);
        let eps = self
            .delta
            .and_then(|d| self.accountant.epsilon(d).ok())
            .map_or(0.0, |e| e.0);
        (eps, delta)
    }

    /// The status a server reports.
    pub fn status(&self) -> v1::DpStatus {
        let (epsilon, delta) = self.spent();
        v1::DpStatus {
            epsilon,
            delta: if delta.is_nan() { 0.0 } else { delta },
            clip: self.clip,
            noise_multiplier: self.settings.noise_multiplier,
            max_epsilon: self.settings.max_epsilon.unwrap_or(0.0),
        }
    }

    /// Fixes a round's parameters, or says why no more rounds may run: ε after this one
    /// would pass `max_epsilon`, or the noise cannot fit the secure sum. `registered` sets δ
    /// on the first round.
    pub fn open_round(
        &mut self,
        store: &Store,
        rate: f64,
        registered: usize,
        expected: usize,
        secure: Option<SecureSum>,
    ) -> Result<Result<RoundDp, String>, ServerError> {
        let delta = match self.delta {
            Some(d) => d,
            None => {
                let d = self.settings.delta_for(registered);
                store.set_meta(META_DELTA, &d.to_string())?;
                info!(delta = d, registered, "privacy: δ fixed");
                self.delta = Some(d);
                d
            }
        };
        let round = match RoundDp::new(&self.settings, self.clip, rate, expected, secure) {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        if let Some(max) = self.settings.max_epsilon {
            let internal = |e: fedtune_privacy::PrivacyError| ServerError::Internal(e.to_string());
            let after = self
                .accountant
                .after(Sampling::Fixed, round.rate, round.accounted, 1)
                .map_err(internal)?;
            let (eps, _) =
                fedtune_privacy::accountant::epsilon(self.accountant.orders(), &after, delta)
                    .map_err(internal)?;
            if eps > max {
                return Ok(Err(format!(
                    "another round would spend ε = {eps:.4} > --dp-max-epsilon {max} (δ = \
                     {delta:.3e}); {:.4} spent so far",
                    self.spent().0
                )));
            }
        }
        Ok(Ok(round))
    }

    /// What a device of this round is asked to do.
    pub fn setup(&self, round: &RoundDp) -> v1::DpSetup {
        v1::DpSetup {
            clip: round.clip,
            report_within: self.settings.adaptive.is_some(),
            noise_stddev: round.device_noise,
            count_noise_stddev: round.device_count_noise,
        }
    }

    /// Noises the round's aggregate (the mean of `aggregate.count` clipped updates) into the
    /// private mean: (Σ + N(0, (zC)²)) / K, the noise added here unless the devices added it
    /// in shares. Then charges the round, moves the clip norm, and saves both before the
    /// caller commits.
    pub fn privatize(
        &mut self,
        store: &Store,
        mut aggregate: Aggregate,
        round: &RoundDp,
        expected: usize,
    ) -> Result<(Aggregate, DpMetrics), ServerError> {
        let count = aggregate.count as f64;
        let std = self.settings.noise_multiplier * round.clip;
        let central = round.device_noise == 0.0;
        let k = expected.max(1) as f64;
        for tensor in &mut aggregate.mean {
            for v in tensor.iter_mut() {
                *v *= count;
            }
            if central {
                self.noise.add_gaussian(tensor, std);
            }
            for v in tensor.iter_mut() {
                *v /= k;
            }
        }
        let mut metrics = vec![
            ("dp_clip".to_string(), round.clip),
            ("dp_noise_stddev".to_string(), std),
        ];
        if let Some(rule) = &self.settings.adaptive {
            let noised = match round.device_count_noise {
                0.0 => round.within + self.noise.gaussian(rule.count_stddev(expected)),
                _ => round.within,
            };
            self.clip = rule.next(round.clip, noised, expected);
            metrics.push(("dp_within_fraction".to_string(), noised / k));
        }
        self.charge(store, round)?;
        let (eps, delta) = self.spent();
        metrics.push(("dp_epsilon".to_string(), eps));
        metrics.push(("dp_delta".to_string(), delta));
        aggregate.total_weight = count;
        Ok((aggregate, metrics))
    }

    fn charge(&mut self, store: &Store, round: &RoundDp) -> Result<(), ServerError> {
        self.accountant
            .compose(Sampling::Fixed, round.rate, round.accounted, 1)
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        let spent: Vec<String> = self.accountant.spent().iter().map(f64::to_string).collect();
        store.set_meta(META_RDP, &spent.join(","))?;
        store.set_meta(META_CLIP, &self.clip.to_string())?;
        Ok(())
    }
}

impl Coordinator {
    /// A round's privacy parameters as it opens: `Some(None)` without DP, `None` when no round
    /// may open (the budget is spent: the federation finishes; or the state cannot be saved:
    /// it waits).
    pub(crate) fn open_dp(
        &self,
        st: &mut State,
        cohort: usize,
        eligible: usize,
    ) -> Option<Option<RoundDp>> {
        let Some(dp) = &self.dp else {
            return Some(None);
        };
        let secure = self.config.secagg.as_ref().and_then(|s| {
            let sizing = s.sizing(cohort).ok()?;
            Some(SecureSum {
                scale: sizing.quantizer.scale(),
                levels: sizing.quantizer.levels(),
                min_survivors: self.config.min_commit.max(sizing.threshold),
                cohort,
                params: st.global.bundle.numel(),
            })
        });
        let store = lock(&self.store);
        let rate = cohort as f64 / eligible.max(1) as f64;
        let registered = st.registry.len();
        let opened = lock(dp).open_round(
            &store,
            rate,
            registered,
            self.config.clients_per_round,
            secure,
        );
        match opened {
            Ok(Ok(round)) => Some(Some(round)),
            Ok(Err(why)) => {
                info!(version = st.global.version, %why, "privacy: no more rounds; federation finished");
                st.phase = Phase::Finished;
                self.changed.notify_waiters();
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "privacy state could not be saved; waiting");
                None
            }
        }
    }
}

/// An update clipped to L2 norm `clip` (as the device should have; an honest device's update
/// comes back unchanged), and whether it was within.
pub(crate) fn clip_update(update: &Bundle, clip: f64) -> Result<(Bundle, Clipped), ServerError> {
    let c = clip_scale(update.l2_norm(), clip);
    if c.within() {
        return Ok((update.clone(), c));
    }
    Ok((update.scaled(c.scale * (1.0 - 1e-6))?, c))
}
