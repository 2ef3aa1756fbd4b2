//! The main job's configuration: every setting of a run, with defaults that run the embedded
//! Shakespeare keyboard federation in about a minute. A TOML file (`--config`) may set any of
//! them, flags override the file, and the resolved config is saved with the run.

use std::collections::BTreeMap;

use fedtune_server::strategy::{Params, Strategy};
use serde::{Deserialize, Serialize};

use fedtune_llm::llama::Proj;

use super::clients::Partition;
use crate::sim::Attack;

/// What the federation learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Next-word prediction: causal language modelling on each client's text.
    Keyboard,
    /// Replies to messages: the loss counts the reply only.
    SmartReply,
}

/// A whole run. Field names are the TOML keys (and, with `-` for `_`, the flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    pub task: Task,
    /// Base model: "" (the embedded tiny Shakespeare model), "smollm2", or a GGUF path.
    pub model: String,
    /// Data: "" (the embedded plays) or a JSONL file.
    pub data: String,
    /// JSONL field(s) naming the client; `a+b` joins several (the plays: `play+speaker`).
    pub client_field: String,
    pub text_field: String,
    /// JSONL field with the reply (smart reply on users' data; the plays pair consecutive
    /// utterances instead).
    pub reply_field: String,
    pub partition: Partition,
    /// IID and Dirichlet partitions: clients to deal the records to (0: as many as the
    /// natural partition has).
    pub num_clients: usize,
    /// Clients with fewer records are left out.
    pub min_examples: usize,
    /// Share of each client's records (its latest) kept as its local test split.
    pub test_fraction: f64,
    /// Share of clients that never train (the global model is measured on them too).
    pub unseen_fraction: f64,
    /// Clients measured (their test splits): of the training clients every `eval_every`
    /// rounds, of the unseen ones before and after the federation (0: all).
    pub eval_clients: usize,
    /// Measure the training clients every this many rounds (and always the first and last).
    pub eval_every: u64,

    pub rounds: u64,
    pub clients_per_round: usize,
    pub over_selection: f64,
    /// Local optimiser steps per round (scaled per device tier).
    pub local_steps: u32,
    pub batch_size: u32,
    pub lr: f32,
    /// Tokens per training sequence.
    pub seq: usize,
    /// FedProx μ (0: FedAvg's plain local objective).
    pub prox_mu: f32,
    /// Device tiers as `steps_scale:share[:rank]`, e.g. "0.5:0.3:4,1:0.5:8,2:0.2:16": a
    /// share of the clients runs that multiple of the local steps (slow phones do less work)
    /// and, if given, trains that LoRA rank (heterogeneous ranks: the global adapter has the
    /// largest; every rank keeps the scale alpha/rank).
    pub tiers: String,
    /// Probability that a selected device drops out in a round.
    pub drop_rate: f64,
    /// Probability that a device is a straggler in a round (late by `straggler_delay_ms`).
    pub straggler_rate: f64,
    pub straggler_delay_ms: u64,

    pub rank: usize,
    pub alpha: f32,
    /// Projections to adapt: q,k,v,o,gate,up,down or all.
    pub targets: String,
    /// FFA-LoRA (Sun et al. 2024): every A stays at its seeded initialisation, the same on
    /// every device; devices train and upload B only (half the upload), so the mean is exact.
    pub ffa_lora: bool,

    /// Local fine-tuning steps of the global adapter on each measured client (0: skip).
    pub personalize_steps: u64,
    /// Their learning rate (lower than the federation's: a few of a client's own lines are
    /// easy to overfit).
    pub personalize_lr: f32,
    /// Also train the same adapter on the pooled training data with the same token budget.
    pub centralized: bool,
    /// Smart reply: candidate replies ranked per message (the true one among them).
    pub candidates: usize,

    pub seed: u64,
    /// CPU threads (0: all cores).
    pub threads: usize,
    /// Devices holding a model at once (0: twice the threads).
    pub concurrency: usize,
    /// "inproc" or "grpc" (real loopback gRPC).
    pub transport: String,

    /// Aggregate securely (SecAgg+): the server sees only the cohort's sum.
    pub secagg: bool,
    /// Neighbours per device (0: sized from the cohort, ≈ 3·log2 n).
    pub secagg_neighbours: usize,
    /// Shares that reconstruct a secret (0: k/2 + 1).
    pub secagg_threshold: usize,
    /// Update values are clipped to [−clip, clip] before quantization.
    pub secagg_clip: f32,
    /// Quantization bits per value.
    pub secagg_bits: u32,
    /// How long advertising, sharing and unmasking may each take, in milliseconds.
    pub secagg_stage_timeout_ms: u64,

    /// Differential privacy: the noise multiplier z, noise z·C on the clipped sum (0: off).
    pub dp_noise_multiplier: f64,
    /// L2 norm C each update is clipped to (the starting norm when it adapts).
    pub dp_clip: f64,
    /// C follows a quantile of the update norms.
    pub dp_adaptive_clip: bool,
    /// The quantile C follows.
    pub dp_target_quantile: f64,
    /// Geometric step of C per round.
    pub dp_clip_lr: f64,
    /// Noise on the count of updates within C (0: K/20).
    pub dp_clip_count_stddev: f64,
    /// δ of the reported (ε, δ) (0: 1/N^1.1 for N devices).
    pub dp_delta: f64,
    /// No round is run that would take ε past this (0: no budget).
    pub dp_max_epsilon: f64,
    /// With secagg: devices add the noise in shares before masking.
    pub dp_distributed: bool,
    /// The server's noise is seeded from `seed` so that a run repeats: fine for research, not
    /// private against anyone holding this file (false: drawn from the operating system).
    pub dp_seeded_noise: bool,

    /// Share of the training devices that send poisoned updates (for testing robust rules).
    pub byzantine_rate: f64,
    /// How they poison them.
    pub attack: Attack,
    /// The attack's strength S: sign-flip sends −S·Δ, scale S·Δ, gaussian noise of S times
    /// the update's RMS.
    pub attack_scale: f64,

    /// Buffered asynchronous aggregation (FedBuff): every this many updates make a model
    /// version, devices training whenever they check in (0: synchronous rounds). `rounds`
    /// then counts versions, `clients_per_round` the devices training at once.
    pub buffer_size: usize,
    /// Buffered aggregation refuses updates trained on a model more versions old than this.
    pub max_staleness: u64,

    /// Aggregation rule, Flower's names: fedavg, fedavgm, fedadagrad, fedadam, fedyogi,
    /// fedmedian, fedtrimmedavg, krum, multikrum, bulyan, flexlora.
    pub strategy: String,
    /// The strategy's settings with Flower's names (a `[strategy_params]` table; flags:
    /// `--param KEY=VALUE`). Last: a TOML table follows the plain keys.
    pub strategy_params: BTreeMap<String, toml::Value>,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            task: Task::Keyboard,
            model: String::new(),
            data: String::new(),
            client_field: "play+speaker".into(),
            text_field: "text".into(),
            reply_field: String::new(),
            partition: Partition::Natural,
            num_clients: 0,
            min_examples: 8,
            test_fraction: 0.2,
            unseen_fraction: 0.1,
            eval_clients: 24,
            eval_every: 1,
            rounds: 10,
            clients_per_round: 10,
            over_selection: 1.0,
            local_steps: 6,
            batch_size: 4,
            lr: 3e-3,
            seq: 64,
            prox_mu: 0.0,
            tiers: String::new(),
            drop_rate: 0.0,
            straggler_rate: 0.0,
            straggler_delay_ms: 200,
            rank: 8,
            alpha: 16.0,
            targets: "q,k,v,o".into(),
            ffa_lora: false,
            personalize_steps: 5,
            personalize_lr: 1e-3,
            centralized: true,
            candidates: 8,
            seed: 0,
            threads: 0,
            concurrency: 0,
            transport: "inproc".into(),
            secagg: false,
            secagg_neighbours: 0,
            secagg_threshold: 0,
            secagg_clip: 1.0,
            secagg_bits: 16,
            secagg_stage_timeout_ms: 30_000,
            dp_noise_multiplier: 0.0,
            dp_clip: 0.1,
            dp_adaptive_clip: false,
            dp_target_quantile: 0.5,
            dp_clip_lr: 0.2,
            dp_clip_count_stddev: 0.0,
            dp_delta: 0.0,
            dp_max_epsilon: 0.0,
            dp_distributed: false,
            dp_seeded_noise: true,
            byzantine_rate: 0.0,
            attack: Attack::SignFlip,
            attack_scale: 10.0,
            buffer_size: 0,
            max_staleness: 10,
            strategy: "fedavg".into(),
            strategy_params: BTreeMap::new(),
        }
    }
}

/// A device tier: a share of the clients, the multiple of the local steps they run and the
/// LoRA rank they train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tier {
    pub steps_scale: f64,
    pub share: f64,
    pub rank: usize,
}

impl JobConfig {
    /// Reads a TOML file (unknown keys are errors, missing ones keep their defaults).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot write the config: {e}\n"))
    }

    /// The device tiers ([`Self::tiers`] parsed; one tier of scale 1 and rank
    /// [`Self::rank`] when empty).
    pub fn tiers(&self) -> Result<Vec<Tier>, String> {
        if self.tiers.trim().is_empty() {
            return Ok(vec![Tier {
                steps_scale: 1.0,
                share: 1.0,
                rank: self.rank,
            }]);
        }
        self.tiers.split(',').map(|t| self.tier(t)).collect()
    }

    fn tier(&self, t: &str) -> Result<Tier, String> {
        let fields: Vec<&str> = t.split(':').map(str::trim).collect();
        let (scale, share, rank) = match fields[..] {
            [scale, share] => (scale, share, None),
            [scale, share, rank] => (scale, share, Some(rank)),
            _ => return Err(format!("tier `{t}` is not steps_scale:share[:rank]")),
        };
        let num = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("`{s}` in tier `{t}` is not a positive number"))
        };
        let rank = match rank {
            None => self.rank,
            Some(r) => r
                .parse::<usize>()
                .ok()
                .filter(|&r| r > 0)
                .ok_or_else(|| format!("rank `{r}` in tier `{t}` is not a positive integer"))?,
        };
        Ok(Tier {
            steps_scale: num(scale)?,
            share: num(share)?,
            rank,
        })
    }

    /// The global adapter's LoRA rank: the largest a tier trains.
    pub fn global_rank(&self) -> Result<usize, String> {
        Ok(self
            .tiers()?
            .iter()
            .map(|t| t.rank)
            .max()
            .unwrap_or(self.rank))
    }

    /// The aggregation strategy with its settings.
    pub fn strategy(&self) -> Result<Box<dyn Strategy>, String> {
        let mut params = Params::default();
        for (k, v) in &self.strategy_params {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.insert(k, &v).map_err(|e| e.to_string())?;
        }
        fedtune_server::strategy::build(&self.strategy, &params).map_err(|e| e.to_string())
    }

    /// CPU threads the run uses: `threads`, or every core when 0.
    pub fn threads(&self) -> usize {
        if self.threads == 0 {
            crate::resources::cores()
        } else {
            self.threads
        }
    }

    /// Devices holding a model at once: `concurrency`, or twice the threads when 0.
    pub fn concurrency(&self) -> usize {
        if self.concurrency == 0 {
            2 * self.threads()
        } else {
            self.concurrency
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, v: f64, max: f64| {
            if (0.0..max).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} = {v} must be in [0, {max})"))
            }
        };
        prob("test_fraction", self.test_fraction, 1.0)?;
        prob("unseen_fraction", self.unseen_fraction, 1.0)?;
        prob("drop_rate", self.drop_rate, 1.0)?;
        prob("straggler_rate", self.straggler_rate, 1.0 + f64::EPSILON)?;
        prob("byzantine_rate", self.byzantine_rate, 1.0)?;
        if !(self.attack_scale.is_finite() && self.attack_scale > 0.0) {
            return Err(format!(
                "attack_scale = {} must be a positive number",
                self.attack_scale
            ));
        }
        if self.rounds == 0 || self.clients_per_round == 0 {
            return Err("rounds and clients_per_round must be at least 1".into());
        }
        if self.eval_every == 0 {
            return Err("eval_every must be at least 1".into());
        }
        if self.local_steps == 0 || self.batch_size == 0 || self.seq < 2 {
            return Err("local_steps and batch_size must be at least 1, seq at least 2".into());
        }
        for (name, lr) in [("lr", self.lr), ("personalize_lr", self.personalize_lr)] {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(format!("{name} = {lr} must be a positive number"));
            }
        }
        if !(self.prox_mu.is_finite() && self.prox_mu >= 0.0) {
            return Err(format!("prox_mu = {} must be a number ≥ 0", self.prox_mu));
        }
        if self.over_selection < 1.0 {
            return Err(format!(
                "over_selection = {} must be at least 1",
                self.over_selection
            ));
        }
        if !(self.dp_noise_multiplier.is_finite() && self.dp_noise_multiplier >= 0.0) {
            return Err(format!(
                "dp_noise_multiplier = {} must be a number ≥ 0 (0: no differential privacy)",
                self.dp_noise_multiplier
            ));
        }
        if let Some(dp) = super::deployment::dp_settings(self) {
            dp.check(self.secagg)
                .map_err(|why| format!("differential privacy: {why}"))?;
        }
        if self.num_clients > 0 && self.partition == Partition::Natural {
            return Err(
                "num_clients needs partition = iid or dirichlet (the natural partition has one \
                 client per role)"
                    .into(),
            );
        }
        if let Partition::Dirichlet { alpha } = self.partition
            && !(alpha.is_finite() && alpha > 0.0)
        {
            return Err(format!("dirichlet alpha = {alpha} must be positive"));
        }
        if !matches!(self.transport.as_str(), "inproc" | "grpc") {
            return Err(format!(
                "transport `{}`: use inproc or grpc",
                self.transport
            ));
        }
        if self.task == Task::SmartReply && self.candidates < 2 {
            return Err("candidates must be at least 2".into());
        }
        parse_targets(&self.targets)?;
        let strategy = self.strategy()?;
        if strategy.needs_individual_updates() && (self.secagg || self.dp_noise_multiplier > 0.0) {
            return Err(format!(
                "strategy `{}` combines individual updates: it runs without secagg and \
                 without differential privacy (both give the server only a clipped sum)",
                self.strategy
            ));
        }
        let tiers = self.tiers()?;
        let hetero = tiers.iter().any(|t| t.rank != tiers[0].rank);
        if hetero && self.secagg {
            return Err(
                "tiers of different LoRA ranks cannot run with secagg (it sums \
                        equal-shaped updates)"
                    .into(),
            );
        }
        if self.buffer_size > 0 && (self.secagg || self.dp_noise_multiplier > 0.0) {
            return Err(
                "buffer_size (buffered asynchronous aggregation) runs without secagg \
                        and without differential privacy"
                    .into(),
            );
        }
        if hetero && self.ffa_lora {
            return Err(
                "ffa_lora shares one A across devices: give every tier the same rank".into(),
            );
        }
        Ok(())
    }
}

/// `q,k,v,o` → projections; `all` is every one.
pub fn parse_targets(s: &str) -> Result<Vec<Proj>, String> {
    if s.trim() == "all" {
        return Ok(Proj::ALL.to_vec());
    }
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            Proj::parse(t.trim()).ok_or_else(|| {
                format!("`{t}` is not a projection: use q, k, v, o, gate, up, down or all")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trips_and_keeps_defaults_for_missing_keys() {
        let c = JobConfig::from_toml(
            "rounds = 3\ntask = \"smart-reply\"\n[partition]\nkind = \"dirichlet\"\nalpha = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.rounds, 3);
        assert_eq!(c.task, Task::SmartReply);
        assert_eq!(c.partition, Partition::Dirichlet { alpha: 0.5 });
        assert_eq!(c.clients_per_round, JobConfig::default().clients_per_round);
        assert_eq!(JobConfig::from_toml(&c.to_toml()).unwrap(), c);
        let err = JobConfig::from_toml("roundz = 3").unwrap_err();
        assert!(err.contains("roundz"), "{err}");
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = |f: fn(&mut JobConfig)| {
            let mut c = JobConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.drop_rate = 1.5).contains("drop_rate"));
        assert!(bad(|c| c.tiers = "0.5".into()).contains("steps_scale:share"));
        assert!(bad(|c| c.tiers = "0.5:x".into()).contains("`x`"));
        assert!(bad(|c| c.transport = "udp".into()).contains("udp"));
        assert!(JobConfig::default().validate().is_ok());
        let t = JobConfig {
            tiers: "0.5:0.3, 2:0.7".into(),
            ..JobConfig::default()
        };
        assert_eq!(
            t.tiers().unwrap()[1],
            Tier {
                steps_scale: 2.0,
                share: 0.7,
                rank: 8,
            }
        );
        assert_eq!(t.global_rank().unwrap(), 8);
        let hetero = JobConfig {
            tiers: "0.5:1:4,1:1:16,2:1".into(),
            ..JobConfig::default()
        };
        let ranks: Vec<usize> = hetero.tiers().unwrap().iter().map(|t| t.rank).collect();
        assert_eq!(ranks, [4, 16, 8]);
        assert_eq!(hetero.global_rank().unwrap(), 16);
        assert!(bad(|c| c.tiers = "1:1:0".into()).contains("rank `0`"));
        assert!(bad(|c| c.tiers = "1:1:4:2".into()).contains("steps_scale:share[:rank]"));
        assert!(
            bad(|c| {
                c.tiers = "1:1:4,1:1:8".into();
                c.secagg = true
            })
            .contains("secagg")
        );
        assert!(
            bad(|c| {
                c.tiers = "1:1:4,1:1:8".into();
                c.ffa_lora = true
            })
            .contains("ffa_lora")
        );
    }
}
