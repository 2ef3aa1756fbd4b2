//! The centralised baseline: what the same adapter reaches trained on the pooled data.

use fedtune_llm::backprop::{BaseView, Example, FitConfig, Schedule, fit};
use fedtune_llm::lora::LoraAdapter;

use super::personalize::fit_config;
use super::prepare::Prepared;
use super::{JobError, bar};

/// The centralised baseline: the same adapter trained on the pooled training examples with
/// the federation's token budget, as minibatch training with a round's worth of sequences per
/// step (clients per round × local batch) and a cosine schedule. Returns it and its steps.
pub(super) fn centralized_baseline(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    budget_tokens: f64,
) -> Result<(LoraAdapter, u64), JobError> {
    let cfg = &p.cfg;
    let pooled: Vec<Example> = p.examples.iter().flatten().cloned().collect();
    let mean_len =
        pooled.iter().map(|e| e.tokens.len()).sum::<usize>() as f64 / pooled.len().max(1) as f64;
    let batch = cfg.batch_size as usize * cfg.clients_per_round;
    let steps = ((budget_tokens / (mean_len * batch as f64)).round() as u64).max(1);
    let mut a = p.template.clone();
    let f = FitConfig {
        batch_size: batch,
        grad_accum: cfg.clients_per_round,
        schedule: Schedule::Cosine {
            warmup: steps / 10,
            total: steps,
            min_ratio: 0.0,
        },
        ..fit_config(cfg, steps, cfg.seed)
    };
    let progress = bar(
        steps,
        "{bar:30} centralised baseline step {pos}/{len} [{elapsed}<{eta}]",
    );
    pool.install(|| {
        fit(&BaseView::of_model(&p.model), &mut a, &pooled, &f, |r| {
            progress.set_position(r.step + 1)
        })
    })?;
    progress.finish_and_clear();
    Ok((a, steps))
}
