//! Measuring a run: every round's global adapter, read back from the server's checkpoints,
//! scored on the test text of chosen training and unseen clients.

use std::path::Path;

use fedtune_client::trainer::adapter_from_bundle;
use fedtune_llm::lora::LoraAdapter;

use super::prepare::Prepared;
use super::report::{RoundRecord, ScoreSummary};
use super::{ClientData, JobError, bar};
use crate::sim;
use crate::task::Scores;
use crate::text_data::Record;

/// The records a scoring pass uses: up to `eval_clients` clients' test splits (spread evenly
/// over the list, so the set is fixed for a given data and seed).
pub(super) fn eval_set(clients: &[ClientData], max: usize) -> (Vec<usize>, Vec<Record>) {
    let n = clients.len();
    let k = if max == 0 { n } else { max.min(n) };
    let picked: Vec<usize> = (0..k).map(|i| i * n / k.max(1)).collect();
    let records = picked
        .iter()
        .flat_map(|&i| clients[i].test.iter().cloned())
        .collect();
    (picked, records)
}

/// What the measurements score: the records of the chosen training and unseen clients.
pub(super) struct EvalSets {
    pub seen_idx: Vec<usize>,
    pub seen: Vec<Record>,
    pub unseen_idx: Vec<usize>,
    pub unseen: Vec<Record>,
}

/// Scores `adapter` on `records` on `pool` (`None` when there is nothing to score).
pub(super) fn score(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    adapter: Option<&LoraAdapter>,
    records: &[Record],
) -> Result<Option<Scores>, JobError> {
    if records.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        pool.install(|| p.io.score(&p.model, adapter, records))?,
    ))
}

/// Every round's record: its global adapter (from the server's checkpoint) scored, and what the
/// server and devices recorded of it. Returns the records and the final adapter.
pub(super) fn measure_rounds(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    report: &sim::SimReport,
    state: &Path,
    sets: &EvalSets,
) -> Result<(Vec<RoundRecord>, LoraAdapter), JobError> {
    let cfg = &p.cfg;
    // A privacy budget may finish the federation before its last planned round.
    let committed = report.version.min(cfg.rounds);
    let progress = bar(
        committed + 1,
        "{bar:30} measuring round {pos}/{len} [{elapsed}<{eta}]",
    );
    let mut rounds = Vec::new();
    let mut adapter = p.template.clone();
    for r in 0..=committed {
        let path = state
            .join("checkpoints")
            .join(fedtune_server::store::checkpoint_file(r));
        let (bundle, _) = fedtune_server::store::read_checkpoint(&path, None)?;
        adapter = adapter_from_bundle(&bundle, &p.template)?;
        let last = r == committed;
        let seen = if r % cfg.eval_every == 0 || last {
            score(p, pool, Some(&adapter), &sets.seen)?
        } else {
            None
        };
        // Unseen clients are measured before and after the federation (each pass costs as
        // much as a round of training).
        let unseen = if r == 0 || last {
            score(p, pool, Some(&adapter), &sets.unseen)?
        } else {
            None
        };
        let record = report
            .coordinator
            .with_store(|s| -> Result<RoundRecord, JobError> {
                let sum = |name: &str| s.metric_total(r, name).map(|(_, v)| v);
                let (n_loss, loss_sum) = s.metric_total(r, "train_loss")?;
                let server = |name: &str| -> Result<Option<f64>, JobError> {
                    let (n, v) = s.metric_total(r, name)?;
                    Ok((n > 0).then_some(v))
                };
                Ok(RoundRecord {
                    round: r,
                    train_loss: (n_loss > 0).then(|| loss_sum / n_loss as f64),
                    seen: seen.map(ScoreSummary::from),
                    unseen: unseen.map(ScoreSummary::from),
                    participants: s.contributors(r)?.len(),
                    cohort: sum("cohort")? as usize,
                    dropouts: sum("dropped_out")? as usize,
                    bytes_up: sum("bytes_up")? as u64,
                    bytes_down: sum("bytes_down")? as u64,
                    train_tokens: sum("train_tokens")? as u64,
                    seconds: sum("round_seconds")?,
                    dp_epsilon: server("dp_epsilon")?,
                    dp_clip: server("dp_clip")?,
                })
            })?;
        rounds.push(record);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok((rounds, adapter))
}
