//! The simulated federation of a run: every training client a device with its own trainer,
//! the real server core, the server's state (SQLite, every round's checkpoint) on disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fedtune_client::trainer::LoraTrainer;
use fedtune_client::{LocalUpdate, TaskContext, Trainer};
use fedtune_proto::{Bundle, Compression};
use indicatif::ProgressBar;

use super::deployment::{device_tiers, device_trainer, initial_global, server_config};
use super::prepare::Prepared;
use super::{JobError, bar};
use crate::sim::{self, FaultRates, Poison, SimConfig, TransportKind, byzantine_devices};

/// A simulated device: counts local training runs for the progress bar, and trains on one
/// thread (the engine runs as many devices at once as there are threads; splitting each
/// device's small products across threads as well only adds synchronisation).
struct Counted {
    inner: LoraTrainer,
    /// The attack, for a Byzantine device.
    poison: Option<Poison>,
    done: Arc<AtomicUsize>,
    bar: ProgressBar,
}

impl Trainer for Counted {
    fn train(
        &mut self,
        global: &Bundle,
        task: &TaskContext,
    ) -> Result<LocalUpdate, fedtune_client::TrainerError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| fedtune_client::TrainerError::Model(format!("thread pool: {e}")))?;
        let mut out = pool.install(|| self.inner.train(global, task));
        if let (Some(poison), Ok(update)) = (&self.poison, out.as_ref()) {
            out = poison.apply(global, update.clone(), task.round);
        }
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar
            .set_message(format!("round {} · {n} local runs", task.round));
        out
    }

    fn lora_rank(&self) -> u32 {
        self.inner.lora_rank()
    }
}

/// Runs the federation; its server state (SQLite, every round's checkpoint) goes to `state`.
pub(super) fn federate(
    p: &Prepared,
    state: &Path,
    threads: usize,
) -> Result<sim::SimReport, JobError> {
    let cfg = &p.cfg;
    let tiers = device_tiers(cfg, p.clients.len())?;
    let sim_cfg = SimConfig {
        server: server_config(cfg, p.clients.len()),
        clients: p.clients.len(),
        transport: if cfg.transport == "grpc" {
            TransportKind::Grpc
        } else {
            TransportKind::Inproc
        },
        threads,
        concurrency: cfg.concurrency(),
        faults: FaultRates {
            drop_before_download: cfg.drop_rate / 3.0,
            drop_during_download: cfg.drop_rate / 3.0,
            drop_during_upload: cfg.drop_rate / 3.0,
            straggler: cfg.straggler_rate,
            straggler_delay: Duration::from_millis(cfg.straggler_delay_ms),
        },
        connections: 0,
        state_dir: state.to_path_buf(),
        compression: Compression::None,
    };
    let progress = bar(cfg.rounds, "{bar:30} round {pos}/{len} {msg} [{elapsed}]");
    let done = Arc::new(AtomicUsize::new(0));
    let byzantine = byzantine_devices(p.clients.len(), cfg.byzantine_rate, cfg.seed);
    let trainer = |i: usize| {
        let inner = device_trainer(
            cfg,
            Arc::clone(&p.model),
            &p.template,
            p.examples[i].clone(),
            i,
            tiers[i],
        )
        .expect("examples were checked in prepare");
        Counted {
            inner,
            poison: byzantine[i].then_some(Poison {
                attack: cfg.attack,
                scale: cfg.attack_scale,
                seed: cfg.seed ^ ((i as u64) << 20),
            }),
            done: Arc::clone(&done),
            bar: progress.clone(),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let ticker = {
        let progress = progress.clone();
        let state = state.to_path_buf();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = std::fs::read_dir(state.join("checkpoints")).map_or(0, |d| d.count());
                progress.set_position(n.saturating_sub(1) as u64);
            }
        })
    };
    let report = rt.block_on(sim::run(
        &sim_cfg,
        initial_global(cfg, &p.template),
        cfg.strategy().map_err(JobError::Config)?,
        trainer,
    ));
    ticker.abort();
    progress.finish_and_clear();
    Ok(report?)
}
