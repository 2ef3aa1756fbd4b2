//! Running the job: data → clients → a simulated federation (the real server core and client
//! runtime) → every round's global adapter measured → personalisation and the centralised
//! baseline → the run's files.

use std::path::Path;
use std::time::Instant;

use super::JobError;
use super::baseline::centralized_baseline;
use super::federation::federate;
use super::measure::{EvalSets, eval_set, measure_rounds, score};
use super::personalize::personalize;
use super::prepare::Prepared;
use super::report::{CompareScores, JobReport, ScoreSummary};

/// Runs the whole job and writes its files under `out`.
pub fn run(p: &Prepared, out: &Path) -> Result<JobReport, JobError> {
    let cfg = &p.cfg;
    let threads = cfg.threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| JobError::Config(format!("thread pool: {e}")))?;
    let started = Instant::now();
    let state = out.join("state");
    check_out_dir(out)?;
    std::fs::create_dir_all(&state)
        .map_err(|e| JobError::Config(format!("cannot create {}: {e}", state.display())))?;
    super::report::write_config(out, cfg)?;
    eprintln!(
        "{} training clients ({} unseen), {} records skipped; base {}; adapter of {} parameters",
        p.clients.len(),
        p.unseen.len(),
        p.skipped,
        p.base,
        p.template.n_params()
    );
    let report = federate(p, &state, threads)?;
    let fed_secs = started.elapsed().as_secs_f64();

    let (seen_idx, seen) = eval_set(&p.clients, cfg.eval_clients);
    let (unseen_idx, unseen) = eval_set(&p.unseen, cfg.eval_clients);
    let sets = EvalSets {
        seen_idx,
        seen,
        unseen_idx,
        unseen,
    };
    let (rounds, final_adapter) = measure_rounds(p, &pool, &report, &state, &sets)?;
    let mut budget_tokens: u64 = rounds.iter().map(|r| r.train_tokens).sum();
    if cfg.dp_noise_multiplier > 0.0 {
        // Under differential privacy devices keep their token counts: the plan's most
        // (every step a full batch of full sequences) stands in for the baseline's budget.
        let per_update = u64::from(cfg.local_steps) * cfg.batch_size as u64 * cfg.seq as u64;
        budget_tokens = rounds
            .iter()
            .map(|r| r.participants as u64 * per_update)
            .sum();
    }
    let personalized = personalize(p, &pool, &final_adapter, &sets.unseen_idx)?;
    let centralized = if cfg.centralized {
        Some(centralized_baseline(p, &pool, budget_tokens as f64)?)
    } else {
        None
    };
    let (central_seen, central_unseen) = match &centralized {
        Some((a, _)) => (
            score(p, &pool, Some(a), &sets.seen)?,
            score(p, &pool, Some(a), &sets.unseen)?,
        ),
        None => (None, None),
    };

    // Round 0's adapter has B = 0: its scores are the base model's, bit for bit.
    let (first, last) = (rounds.first().cloned(), rounds.last().cloned());
    let job = JobReport {
        task: cfg.task,
        base: p.base.to_string(),
        clients: p.clients.len(),
        unseen_clients: p.unseen.len(),
        measured_clients: sets.seen_idx.len(),
        measured_unseen_clients: sets.unseen_idx.len(),
        skipped_records: p.skipped,
        adapter_params: p.template.n_params(),
        rounds,
        seen: CompareScores {
            base: first.as_ref().and_then(|f| f.seen.clone()),
            federated: last.as_ref().and_then(|l| l.seen.clone()),
            centralized: central_seen.map(ScoreSummary::from),
            personalized: None,
        },
        unseen: CompareScores {
            base: first.as_ref().and_then(|f| f.unseen.clone()),
            federated: last.as_ref().and_then(|l| l.unseen.clone()),
            centralized: central_unseen.map(ScoreSummary::from),
            personalized: personalized.map(ScoreSummary::from),
        },
        budget_tokens,
        centralized_steps: centralized.as_ref().map(|(_, s)| *s),
        federation_seconds: fed_secs,
        total_seconds: started.elapsed().as_secs_f64(),
        bytes_up: report.clients.iter().map(|c| c.bytes_up).sum(),
        bytes_down: report.clients.iter().map(|c| c.bytes_down).sum(),
        privacy: privacy_summary(&report, cfg),
        strategy: match cfg.buffer_size {
            0 => cfg.strategy().map_err(JobError::Config)?.describe(),
            n => format!(
                "{}, buffered asynchronously (FedBuff: {n} updates a version, staleness at most {})",
                cfg.strategy().map_err(JobError::Config)?.describe(),
                cfg.max_staleness
            ),
        },
        lora: lora_summary(cfg)?,
        byzantine: crate::sim::byzantine_devices(p.clients.len(), cfg.byzantine_rate, cfg.seed)
            .iter()
            .filter(|&&b| b)
            .count(),
    };
    super::report::write_outputs(out, p, &job, &final_adapter)?;
    super::plot::curves(&out.join("curves.png"), &job)?;
    Ok(job)
}

/// A run writes into a new or empty directory only: never over an earlier run, nor among
/// files of another kind.
fn check_out_dir(out: &Path) -> Result<(), JobError> {
    let refuse = |why: &str| {
        Err(JobError::Config(format!(
            "--out {}: {why}: choose a new or empty directory",
            out.display()
        )))
    };
    match std::fs::read_dir(out).map(|mut entries| entries.next().is_none()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if out.exists() && !out.is_dir() => refuse(&format!("not a directory ({e})")),
        Err(e) => refuse(&format!("cannot be read ({e})")),
        Ok(true) => Ok(()),
        Ok(false) if out.join("state").exists() => refuse("already holds a run"),
        Ok(false) => refuse("already holds other files"),
    }
}

/// The privacy the federation spent, as its server reports it.
fn privacy_summary(
    report: &crate::sim::SimReport,
    cfg: &super::JobConfig,
) -> Option<super::report::PrivacySummary> {
    let status = report.coordinator.status();
    let dp = status.dp?;
    Some(super::report::PrivacySummary {
        epsilon: dp.epsilon,
        delta: dp.delta,
        noise_multiplier: dp.noise_multiplier,
        clip: report
            .coordinator
            .with_store(|s| s.metric_total(status.committed_rounds, "dp_clip"))
            .map_or(dp.clip, |(_, c)| c),
        rounds: status.committed_rounds,
        seeded_noise: cfg.dp_seeded_noise,
    })
}

/// The devices' adapters in a few words, when not one rank of full LoRA.
fn lora_summary(cfg: &super::JobConfig) -> Result<Option<String>, JobError> {
    let mut ranks: Vec<usize> = cfg
        .tiers()
        .map_err(JobError::Config)?
        .iter()
        .map(|t| t.rank)
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    let mut parts = Vec::new();
    if ranks.len() > 1 {
        let list: Vec<String> = ranks.iter().map(usize::to_string).collect();
        parts.push(format!(
            "device tiers train ranks {}, the global adapter has rank {}",
            list.join("/"),
            ranks.last().copied().unwrap_or(cfg.rank)
        ));
    }
    if cfg.ffa_lora {
        parts.push(format!(
            "FFA-LoRA at rank {} (A frozen from the seed, B alone trained and uploaded)",
            ranks.last().copied().unwrap_or(cfg.rank)
        ));
    }
    Ok((!parts.is_empty()).then(|| parts.join("; ")))
}
