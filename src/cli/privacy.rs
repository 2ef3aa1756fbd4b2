//! `fedtune privacy`: the accountant on its own, to read ε before a run or choose the noise
//! for a budget.

use clap::{Args, Subcommand};
use fedtune_privacy::{RdpAccountant, Sampling, combined_noise_multiplier, noise_for_epsilon};

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// ε at δ after T rounds of the subsampled Gaussian mechanism (Rényi DP accountant,
    /// as Google's dp-accounting computes it). Last line: `epsilon=<value>`.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier whose ε after T rounds is at most the target. Last
    /// line: `noise_multiplier=<value>`.
    Noise(NoiseArgs),
}

#[derive(Debug, Args)]
struct Mechanism {
    /// Fraction of devices sampled into each round (cohort / population), in (0, 1].
    #[arg(long, value_name = "Q")]
    sampling_rate: f64,
    /// Rounds run.
    #[arg(long, value_name = "T")]
    rounds: u64,
    /// δ of the (ε, δ) guarantee, in (0, 1); 1/N^1.1 for N devices is a common choice.
    #[arg(long, value_name = "D")]
    delta: f64,
    /// How cohorts are drawn: `poisson` (each device independently; add-or-remove-one
    /// neighbours) or `fixed` (a fixed-size cohort without replacement; replace-one
    /// neighbours, where the noise multiplier is relative to the replace-one sensitivity,
    /// twice the clip norm for a sum of clipped updates: `fedtune server` accounts its
    /// fixed cohorts with z/2).
    #[arg(long, default_value = "poisson", value_name = "poisson|fixed")]
    sampling: Sampling,
    /// Noise multiplier of a second query on the same cohort, composed in: adaptive
    /// clipping's count (2·σ_b; σ_b = K/20 by default).
    #[arg(long, value_name = "Z")]
    count_noise_multiplier: Option<f64>,
}

#[derive(Debug, Args)]
pub struct EpsilonArgs {
    /// Noise standard deviation over the sensitivity (z = σ / C).
    #[arg(long, value_name = "Z")]
    noise_multiplier: f64,
    #[command(flatten)]
    mechanism: Mechanism,
}

#[derive(Debug, Args)]
pub struct NoiseArgs {
    /// The ε to reach.
    #[arg(long, value_name = "E")]
    epsilon: f64,
    #[command(flatten)]
    mechanism: Mechanism,
}

impl Mechanism {
    fn effective(&self, z: f64) -> f64 {
        match self.count_noise_multiplier {
            Some(c) => combined_noise_multiplier(&[z, c]),
            None => z,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if !(self.sampling_rate > 0.0 && self.sampling_rate <= 1.0) {
            anyhow::bail!("--sampling-rate {} is not in (0, 1]", self.sampling_rate);
        }
        if let Some(c) = self.count_noise_multiplier
            && !(c.is_finite() && c > 0.0)
        {
            anyhow::bail!("--count-noise-multiplier {c} is not a positive number");
        }
        Ok(())
    }
}

pub fn run(command: PrivacyCommand) -> anyhow::Result<()> {
    match command {
        PrivacyCommand::Epsilon(a) => {
            let m = &a.mechanism;
            m.check()?;
            if !(a.noise_multiplier.is_finite() && a.noise_multiplier > 0.0) {
                anyhow::bail!(
                    "--noise-multiplier {} is not a positive number",
                    a.noise_multiplier
                );
            }
            let z = m.effective(a.noise_multiplier);
            let mut acc = RdpAccountant::default();
            acc.compose(m.sampling, m.sampling_rate, z, m.rounds)?;
            let (eps, order) = acc.epsilon(m.delta)?;
            println!(
                "sampling={} q={} z={} rounds={} delta={} order={order}",
                m.sampling, m.sampling_rate, z, m.rounds, m.delta
            );
            println!("epsilon={eps}");
        }
        PrivacyCommand::Noise(a) => {
            let m = &a.mechanism;
            m.check()?;
            // With a count query the update's own multiplier is found so that the
            // combination reaches the target.
            let (combined, eps) =
                noise_for_epsilon(a.epsilon, m.sampling, m.sampling_rate, m.rounds, m.delta)?;
            let z = match m.count_noise_multiplier {
                None => combined,
                Some(c) if c > combined => (combined.powi(-2) - c.powi(-2)).powf(-0.5),
                Some(c) => anyhow::bail!(
                    "the count query alone (multiplier {c}) needs more noise than ε = {} allows \
                     (combined multiplier {combined}): raise its σ_b",
                    a.epsilon
                ),
            };
            println!("epsilon={eps} combined_noise_multiplier={combined}");
            println!("noise_multiplier={z}");
        }
    }
    Ok(())
}
