//! Where the coordinator runs buffered aggregation: accepting an update into the buffer (its
//! staleness weight, its widening to the global adapter's rank, the synced journal record)
//! and committing a full buffer as the next model version.

use std::sync::Arc;

use fedtune_proto::{Bundle, v1};
use tracing::{info, warn};

use super::journal::{Entry, Journal};
use super::staleness_weight;
use crate::coordinator::{Global, SERVER_METRICS, State, lock};
use crate::round::Phase;
use crate::store::Contribution;
use crate::strategy::{RankFill, hetlora};
use crate::{Coordinator, ServerError};

impl Coordinator {
    /// Accepts one admitted update into the buffer: weighted by its staleness, widened to
    /// the global adapter's rank, journaled (and synced) before it is acknowledged; a full
    /// buffer is committed at once.
    pub(crate) fn accept_buffered(
        self: &Arc<Self>,
        st: &mut State,
        client: &str,
        h: &v1::UploadHeader,
        update: &Bundle,
        weight: f64,
        fill: RankFill,
    ) -> Result<v1::UploadResponse, ServerError> {
        let settings = self
            .config
            .buffered
            .as_ref()
            .ok_or_else(|| ServerError::Internal("buffering without settings".into()))?;
        let global = Arc::clone(&st.global);
        let Phase::Buffering(b) = &mut st.phase else {
            return Err(ServerError::Late { round: h.round });
        };
        // Versions may have been committed while the update was arriving.
        let staleness = b.staleness(h.model_version);
        if staleness > settings.max_staleness {
            return Err(ServerError::Stale(format!(
                "update trained on model version {}, {staleness} versions old by the time it \
                 arrived (at most {} are accepted)",
                h.model_version, settings.max_staleness
            )));
        }
        let update = hetlora::at_global_shapes(update, &global.bundle, fill)?.into_owned();
        b.accept(Entry {
            contribution: Contribution {
                client_id: client.to_string(),
                task_id: h.task_id.clone(),
                num_examples: h.num_examples,
                weight: weight * staleness_weight(staleness),
            },
            staleness,
            update,
        })?;
        let (round, received) = (b.round, b.contributions.len());
        if received >= settings.buffer_size {
            self.commit_buffer(st);
        }
        // A task slot is free again.
        self.changed.notify_waiters();
        Ok(v1::UploadResponse {
            accepted: true,
            round,
            received: received as u64,
        })
    }

    /// Commits the full buffer as the next model version and starts the next buffer (or
    /// finishes). A failed commit keeps the buffer: it is read back from its journal.
    fn commit_buffer(self: &Arc<Self>, st: &mut State) {
        let Some(settings) = self.config.buffered.clone() else {
            return;
        };
        let global = Arc::clone(&st.global);
        let Phase::Buffering(b) = &mut st.phase else {
            return;
        };
        let round = b.round;
        let mut fresh = lock(&self.strategy).aggregator(&global.bundle);
        fresh.set_parallel(self.config.parallel_fold);
        let full = std::mem::replace(&mut b.aggregator, fresh);
        let contributions = std::mem::take(&mut b.contributions);
        let seconds = b.opened.elapsed().as_secs_f64();
        let committed = full
            .finish()
            .map_err(ServerError::from)
            .and_then(|aggregate| {
                let (next, saved) =
                    self.apply_and_store(round, 0, aggregate, &contributions, &global)?;
                let metrics = [
                    ("cohort".to_string(), contributions.len() as f64),
                    ("round_seconds".to_string(), seconds),
                ];
                lock(&self.store).insert_metrics(round, SERVER_METRICS, &metrics)?;
                let next = Arc::new(Global::new(round, next)?);
                // The next buffer's journal, unless this was the last version.
                let journal = (round < self.config.rounds)
                    .then(|| {
                        Journal::open(
                            &self.buffer_dir,
                            round + 1,
                            round,
                            &global.bundle.manifest(),
                            self.config.durable,
                        )
                    })
                    .transpose()?;
                Ok((next, journal, saved))
            });
        match committed {
            Ok((next, journal, saved)) => {
                info!(version = round, updates = contributions.len(), digest = %saved.digest.to_hex(), "buffer committed");
                st.global = Arc::clone(&next);
                match journal {
                    Some((journal, _)) => {
                        let aggregator = lock(&self.strategy).aggregator(&next.bundle);
                        b.advance(next, aggregator, journal, settings.max_staleness)
                            .remove();
                    }
                    None => {
                        info!(
                            version = round,
                            "all versions committed: federation finished"
                        );
                        if let Phase::Buffering(b) =
                            std::mem::replace(&mut st.phase, Phase::Finished)
                        {
                            b.journal.remove();
                        }
                    }
                }
            }
            Err(e) => {
                warn!(version = round, error = %e, "buffer commit failed; it is kept and retried at the next update");
                if let Err(e) = self.reload_buffer(b, &global) {
                    warn!(version = round, error = %e, "the buffer could not be read back from its journal");
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Refills the buffer from its journal (after a failed commit took its aggregate).
    fn reload_buffer(&self, b: &mut super::Buffer, global: &Global) -> Result<(), ServerError> {
        let (journal, entries) = Journal::open(
            &self.buffer_dir,
            b.round,
            b.round - 1,
            &global.bundle.manifest(),
            self.config.durable,
        )?;
        let mut aggregator = lock(&self.strategy).aggregator(&global.bundle);
        b.contributions.clear();
        for e in entries {
            aggregator.fold(&e.update, e.contribution.weight)?;
            b.contributions.push(e.contribution);
        }
        b.aggregator = aggregator;
        b.journal = journal;
        Ok(())
    }
}
