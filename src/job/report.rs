//! What a run reports and the files it writes under its output directory:
//! `config.toml` (the resolved config), `metrics.jsonl` (one line per round), `summary.json`,
//! `curves.png`, and the final adapter as a PEFT directory (`adapter/`) and a llama.cpp GGUF
//! LoRA (`adapter.gguf`). `state/` holds the server's SQLite file and every round's checkpoint.

use std::path::Path;

use fedtune_llm::lora::{LoraAdapter, gguf_adapter, peft};
use serde::Serialize;

use super::prepare::Prepared;
use super::{JobConfig, JobError, Task};
use crate::task::Scores;

/// A scoring pass's metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreSummary {
    pub loss: f64,
    pub perplexity: f64,
    /// Keyboard: next-word top-1 accuracy; smart reply: recall@1 of the true reply.
    pub top1: f64,
    /// Keyboard: next-word top-3 accuracy; smart reply: recall@3.
    pub top3: f64,
    pub n_tokens: usize,
    /// Words (keyboard) or messages (smart reply) scored.
    pub n_items: usize,
}

impl From<Scores> for ScoreSummary {
    fn from(s: Scores) -> Self {
        Self {
            loss: s.loss(),
            perplexity: s.perplexity(),
            top1: s.top1_accuracy(),
            top3: s.top3_accuracy(),
            n_tokens: s.n_tokens,
            n_items: s.n_items,
        }
    }
}

/// One round of the federation (round 0: the initial adapter, i.e. the base model).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRecord {
    pub round: u64,
    /// Mean local training loss the devices reported.
    pub train_loss: Option<f64>,
    /// The round's global adapter on the training clients' local test splits.
    pub seen: Option<ScoreSummary>,
    /// ... and on clients that never trained.
    pub unseen: Option<ScoreSummary>,
    /// Updates aggregated.
    pub participants: usize,
    /// Devices selected.
    pub cohort: usize,
    /// Selected devices that dropped out.
    pub dropouts: usize,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Tokens the devices trained on.
    pub train_tokens: u64,
    /// From the round's opening to its commit.
    pub seconds: f64,
    /// Differential privacy: ε spent once this round was committed, at the run's δ ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp_epsilon: Option<f64>,
    /// ... and the clip norm the round used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp_clip: Option<f64>,
}

/// The privacy a run spent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacySummary {
    pub epsilon: f64,
    pub delta: f64,
    pub noise_multiplier: f64,
    /// The clip norm the last round used.
    pub clip: f64,
    pub rounds: u64,
    /// Whether the noise was seeded (repeatable, for research only).
    pub seeded_noise: bool,
}

/// One test population under each model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareScores {
    pub base: Option<ScoreSummary>,
    pub federated: Option<ScoreSummary>,
    pub centralized: Option<ScoreSummary>,
    /// The federated adapter after a few local steps on each client's own training split.
    pub personalized: Option<ScoreSummary>,
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    pub task: Task,
    pub base: String,
    pub clients: usize,
    pub unseen_clients: usize,
    pub measured_clients: usize,
    pub measured_unseen_clients: usize,
    pub skipped_records: usize,
    pub adapter_params: usize,
    #[serde(skip)]
    pub rounds: Vec<RoundRecord>,
    /// Training clients' local test splits.
    pub seen: CompareScores,
    /// Clients that never trained (their test splits).
    pub unseen: CompareScores,
    /// Tokens the federation trained on (the centralised baseline gets as many).
    pub budget_tokens: u64,
    pub centralized_steps: Option<u64>,
    pub federation_seconds: f64,
    pub total_seconds: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Differential privacy: the final (ε, δ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySummary>,
    /// The aggregation rule with its settings.
    pub strategy: String,
    /// The adapters the devices train, when not one rank of full LoRA (tier ranks, FFA-LoRA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<String>,
    /// Training devices that sent poisoned updates.
    pub byzantine: usize,
}

/// Writes `config.toml`.
pub fn write_config(out: &Path, cfg: &JobConfig) -> Result<(), JobError> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("config.toml"), cfg.to_toml())?;
    Ok(())
}

/// Writes every file of a finished run but the config and the plot.
pub fn write_outputs(
    out: &Path,
    p: &Prepared,
    report: &JobReport,
    adapter: &LoraAdapter,
) -> Result<(), JobError> {
    let mut lines = String::new();
    for r in &report.rounds {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    std::fs::write(out.join("metrics.jsonl"), lines)?;
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let base = p.base.to_string();
    peft::save(adapter, &p.model.cfg, &out.join("adapter"), Some(&base))?;
    gguf_adapter::save(
        adapter,
        &p.model.cfg,
        &out.join("adapter.gguf"),
        Some(&base),
    )?;
    Ok(())
}

/// Relative change from `a` to `b`, in percent.
fn change(a: f64, b: f64) -> String {
    format!("{:+.1}%", (b / a - 1.0) * 100.0)
}

/// The one-screen summary printed at the end of a run.
pub fn table(r: &JobReport) -> String {
    let (m1, m3) = match r.task {
        Task::Keyboard => ("top-1", "top-3"),
        Task::SmartReply => ("recall@1", "recall@3"),
    };
    let mut s = format!(
        "{} on {} training clients ({} measured) and {} unseen ({} measured); base {}; adapter of {} parameters\n",
        match r.task {
            Task::Keyboard => "keyboard",
            Task::SmartReply => "smart reply",
        },
        r.clients,
        r.measured_clients,
        r.unseen_clients,
        r.measured_unseen_clients,
        r.base,
        r.adapter_params
    );
    s += &format!(
        "{:<28} {:>10} {:>9} {:>9}\n",
        "model / test clients", "perplexity", m1, m3
    );
    let row = |name: &str, x: &Option<ScoreSummary>| match x {
        Some(x) => format!(
            "{name:<28} {:>10.3} {:>9.4} {:>9.4}\n",
            x.perplexity, x.top1, x.top3
        ),
        None => String::new(),
    };
    for (label, c) in [("training", &r.seen), ("unseen", &r.unseen)] {
        s += &row(&format!("base / {label}"), &c.base);
        s += &row(&format!("federated / {label}"), &c.federated);
        s += &row(&format!("centralised / {label}"), &c.centralized);
        s += &row(&format!("personalised / {label}"), &c.personalized);
    }
    if let (Some(b), Some(f)) = (&r.unseen.base, &r.unseen.federated) {
        s += &format!(
            "unseen clients: federated vs base perplexity {}",
            change(b.perplexity, f.perplexity)
        );
        if let Some(c) = &r.unseen.centralized {
            s += &format!(
                ", federated vs centralised {}",
                change(c.perplexity, f.perplexity)
            );
        }
        if let Some(p) = &r.unseen.personalized {
            s += &format!(
                ", personalised vs federated {}",
                change(f.perplexity, p.perplexity)
            );
        }
        s.push('\n');
    }
    s += &format!(
        "{} tokens trained in {} rounds, {:.1} s federated, {:.1} s in all; {:.1} MB up, {:.1} MB down\n",
        r.budget_tokens,
        r.rounds.len().saturating_sub(1),
        r.federation_seconds,
        r.total_seconds,
        r.bytes_up as f64 / 1e6,
        r.bytes_down as f64 / 1e6
    );
    if r.strategy != "fedavg" || r.byzantine > 0 {
        s += &format!("aggregation: {}", r.strategy);
        if r.byzantine > 0 {
            s += &format!("; {} Byzantine devices", r.byzantine);
        }
        s.push('\n');
    }
    if let Some(l) = &r.lora {
        s += &format!("LoRA: {l}\n");
    }
    if let Some(p) = &r.privacy {
        s += &format!(
            "differential privacy: (ε = {:.3}, δ = {:.2e}) after {} rounds, noise multiplier {}, clip {:.4}{}\n",
            p.epsilon,
            p.delta,
            p.rounds,
            p.noise_multiplier,
            p.clip,
            if p.seeded_noise {
                " (seeded noise: for research only)"
            } else {
                ""
            }
        );
    }
    s
}
