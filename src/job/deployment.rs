//! The job deployed: the server's setup and each device's trainer, built the same way by the
//! simulation and by `fedtune server --job` / `fedtune client --job` processes, so both train
//! alike for the same seed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fedtune_client::trainer::{LoraTrainer, adapter_bundle, b_bundle};
use fedtune_llm::backprop::Example;
use fedtune_llm::llama::LlamaModel;
use fedtune_llm::lora::LoraAdapter;
use fedtune_proto::{Bundle, TrainingPlan};
use fedtune_server::ServerConfig;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::config::Tier;
use super::prepare::{lora_config, lora_config_at, open_base, record_fields, task_io};
use super::{ClientSplit, JobConfig, JobError, build_clients};
use crate::sim;
use crate::text_data::load_records;

/// The tier of each training client (assigned by a seeded shuffle, in the tiers' shares).
pub(super) fn device_tiers(cfg: &JobConfig, n: usize) -> Result<Vec<Tier>, JobError> {
    let tiers = cfg.tiers().map_err(JobError::Config)?;
    let total: f64 = tiers.iter().map(|t| t.share).sum();
    let mut out = Vec::with_capacity(n);
    for t in &tiers {
        let k = ((t.share / total) * n as f64).round() as usize;
        out.extend(std::iter::repeat_n(*t, k));
    }
    let last = *tiers.last().expect("tiers() gives at least one");
    out.resize(n, last);
    out.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x71E2));
    Ok(out)
}

/// The job's initial global adapter: `template` (B alone under FFA-LoRA).
pub(super) fn initial_global(cfg: &JobConfig, template: &LoraAdapter) -> Bundle {
    match cfg.ffa_lora {
        true => b_bundle(template),
        false => adapter_bundle(template),
    }
}

/// The trainer of training client `index` (in `tier`): built the same way by the simulation
/// and by a `fedtune client` process, so both train alike for the same seed. `template` is
/// the global adapter's shape; a tier of a lower rank trains its own.
pub fn device_trainer(
    cfg: &JobConfig,
    model: Arc<LlamaModel>,
    template: &LoraAdapter,
    examples: Vec<Example>,
    index: usize,
    tier: Tier,
) -> Result<LoraTrainer, JobError> {
    let template = match tier.rank == template.config.rank {
        true => template.clone(),
        false => LoraAdapter::new(lora_config_at(cfg, tier.rank)?, &model.cfg)?,
    };
    Ok(LoraTrainer::new(
        model,
        template,
        examples,
        sim::trainer_seed(cfg.seed, index),
    )?
    .with_steps_scale(tier.steps_scale)
    .with_eval_before(false)
    .with_frozen_a(cfg.ffa_lora))
}

/// A deployed device of the job: training client `index` of `n_clients`, holding only its
/// own records in `data` (one client's JSONL, in the order it wrote them). Its latest
/// `test_fraction` stays out of training, as in the simulation.
pub fn device_from_file(
    cfg: &JobConfig,
    data: &Path,
    index: usize,
    n_clients: usize,
) -> Result<LoraTrainer, JobError> {
    let (_, model) = open_base(cfg)?;
    let io = task_io(cfg, &model)?;
    let records = load_records(data, &record_fields(cfg))?;
    let split = ClientSplit {
        partition: super::Partition::Natural,
        min_examples: 2,
        test_fraction: cfg.test_fraction,
        seed: cfg.seed,
        num_clients: 0,
    };
    if records.n_clients() != 1 {
        return Err(JobError::Config(format!(
            "{} holds {} clients' records (by `{}`): a device holds its own only",
            data.display(),
            records.n_clients(),
            cfg.client_field
        )));
    }
    let mut mine = build_clients(&records.records, &split);
    if mine.is_empty() {
        return Err(JobError::Config(format!(
            "{}: a device needs at least 2 records (one to train on, one to test)",
            data.display()
        )));
    }
    let client = mine.remove(0);
    let examples = io.examples(&client.train)?;
    let template = LoraAdapter::new(lora_config(cfg)?, &model.cfg)?;
    let tier = device_tiers(cfg, n_clients.max(index + 1))?[index];
    device_trainer(cfg, model, &template, examples, index, tier)
}

/// The server side of a deployed job: the initial global adapter and the round settings for
/// `n_clients` devices (the simulation's, but durable and lingering for late devices).
pub fn server_setup(cfg: &JobConfig, n_clients: usize) -> Result<(Bundle, ServerConfig), JobError> {
    let (_, model) = open_base(cfg)?;
    let template = LoraAdapter::new(lora_config(cfg)?, &model.cfg)?;
    let mut server = ServerConfig {
        durable: true,
        linger: Duration::from_secs(3),
        ..server_config(cfg, n_clients)
    };
    // A deployment's noise always comes from the operating system.
    if let Some(dp) = &mut server.dp {
        dp.noise_seed = None;
    }
    Ok((initial_global(cfg, &template), server))
}

/// The job's differential-privacy settings (`None` when off).
pub(super) fn dp_settings(cfg: &JobConfig) -> Option<fedtune_server::DpSettings> {
    let positive = |x: f64| (x > 0.0).then_some(x);
    positive(cfg.dp_noise_multiplier)?;
    Some(fedtune_server::DpSettings {
        noise_multiplier: cfg.dp_noise_multiplier,
        clip: cfg.dp_clip,
        adaptive: cfg
            .dp_adaptive_clip
            .then_some(fedtune_server::AdaptiveClip {
                target_quantile: cfg.dp_target_quantile,
                learning_rate: cfg.dp_clip_lr,
                count_stddev: positive(cfg.dp_clip_count_stddev),
            }),
        delta: positive(cfg.dp_delta),
        max_epsilon: positive(cfg.dp_max_epsilon),
        distributed: cfg.dp_distributed,
        noise_seed: cfg.dp_seeded_noise.then_some(cfg.seed ^ 0xD1FF_05E5),
    })
}

pub(super) fn server_config(cfg: &JobConfig, n_clients: usize) -> ServerConfig {
    let k = cfg.clients_per_round;
    ServerConfig {
        rounds: cfg.rounds,
        clients_per_round: k,
        over_selection: cfg.over_selection,
        min_commit: ((k as f64 * 0.8).ceil() as usize).clamp(1, k),
        min_clients: n_clients,
        // Ten seconds a local step for every ten devices of the round: the simulated devices
        // share the machine's cores.
        round_timeout: Duration::from_secs(
            30 + cfg.straggler_delay_ms / 1000
                + 10 * u64::from(cfg.local_steps) * k.div_ceil(10) as u64,
        ),
        long_poll: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(45),
        seed: cfg.seed,
        training: TrainingPlan {
            local_steps: cfg.local_steps,
            batch_size: cfg.batch_size,
            learning_rate: cfg.lr,
            prox_mu: cfg.prox_mu,
            ..TrainingPlan::default()
        },
        durable: false,
        linger: Duration::ZERO,
        secagg: cfg.secagg.then(|| fedtune_server::SecAggSettings {
            neighbours: (cfg.secagg_neighbours > 0).then_some(cfg.secagg_neighbours),
            threshold: (cfg.secagg_threshold > 0).then_some(cfg.secagg_threshold),
            clip: cfg.secagg_clip,
            bits: cfg.secagg_bits,
            stage_timeout: Duration::from_millis(cfg.secagg_stage_timeout_ms),
        }),
        dp: dp_settings(cfg),
        buffered: (cfg.buffer_size > 0).then(|| fedtune_server::BufferedSettings {
            buffer_size: cfg.buffer_size,
            max_staleness: cfg.max_staleness,
            concurrency: k,
            task_timeout: Duration::from_secs(
                30 + cfg.straggler_delay_ms / 1000 + 10 * u64::from(cfg.local_steps),
            ),
        }),
        ..ServerConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_cover_every_client_in_their_shares() {
        let cfg = JobConfig {
            tiers: "0.5:1,2:3".into(),
            ..JobConfig::default()
        };
        let t = device_tiers(&cfg, 8).unwrap();
        assert_eq!(t.iter().filter(|t| t.steps_scale == 0.5).count(), 2);
        assert_eq!(t.iter().filter(|t| t.steps_scale == 2.0).count(), 6);
        assert_eq!(t, device_tiers(&cfg, 8).unwrap());
    }
}
