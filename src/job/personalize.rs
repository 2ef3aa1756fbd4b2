//! Personalisation: how much a few local steps on top of the final global adapter help a
//! client the federation never trained on.

use fedtune_llm::backprop::{BaseView, FitConfig, OptimizerKind, Schedule, fit};
use fedtune_llm::lora::LoraAdapter;

use super::prepare::Prepared;
use super::{JobConfig, JobError};
use crate::task::Scores;

pub(super) fn fit_config(cfg: &JobConfig, steps: u64, seed: u64) -> FitConfig {
    FitConfig {
        steps,
        batch_size: cfg.batch_size as usize,
        grad_accum: 1,
        lr: cfg.lr,
        schedule: Schedule::Constant,
        optimizer: OptimizerKind::AdamW { weight_decay: 0.0 },
        max_grad_norm: Some(1.0),
        prox_mu: 0.0,
        checkpoint: false,
        seed,
        freeze_lora_a: cfg.ffa_lora,
    }
}

/// Personalisation: each measured unseen client fine-tunes `global` on its own training split
/// for a few steps, then is scored on its test split.
pub(super) fn personalize(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    global: &LoraAdapter,
    clients: &[usize],
) -> Result<Option<Scores>, JobError> {
    let cfg = &p.cfg;
    if cfg.personalize_steps == 0 || clients.is_empty() {
        return Ok(None);
    }
    let mut total = Scores::default();
    for &i in clients {
        let c = &p.unseen[i];
        let examples = p.io.examples(&c.train)?;
        let mut a = global.clone();
        if !examples.is_empty() {
            let f = FitConfig {
                lr: cfg.personalize_lr,
                ..fit_config(cfg, cfg.personalize_steps, cfg.seed ^ i as u64)
            };
            pool.install(|| fit(&BaseView::of_model(&p.model), &mut a, &examples, &f, |_| {}))?;
        }
        total.add(&pool.install(|| p.io.score(&p.model, Some(&a), &c.test))?);
    }
    Ok(Some(total))
}
