//! The round lifecycle: opening a round (cohort, deadline, secure aggregation), its deadline,
//! abandoning an attempt, and committing (aggregate, apply, persist off the async threads).
//! The rules live in [`crate::round`]; this is where the coordinator applies them.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::coordinator::{Global, SERVER_METRICS, State, lock};
use crate::round::{CommitReason, OpenRound, Phase, sample_cohort};
use crate::secagg::round::Stage;
use crate::store::{CommittedRound, Contribution, RoundCommit};
use crate::strategy::Aggregate;
use crate::{Coordinator, ServerError};
use fedtune_proto::Bundle;

impl Coordinator {
    /// Opens the next round (or finishes) when the phase allows it.
    pub(crate) fn advance(self: &Arc<Self>, st: &mut State) {
        if !matches!(st.phase, Phase::Waiting) {
            return;
        }
        let round = st.global.version + 1;
        if round > self.config.rounds {
            info!(
                version = st.global.version,
                "all rounds committed: federation finished"
            );
            st.phase = Phase::Finished;
            self.changed.notify_waiters();
            return;
        }
        // `min_clients` gates the first round; later rounds draw from who can be drawn.
        if st.registry.len() < self.config.min_clients.max(1) {
            return;
        }
        let eligible = st.registry.eligible().count();
        if eligible < self.config.min_commit.max(1) {
            info!(
                round,
                eligible,
                min_commit = self.config.min_commit,
                "too few devices to draw from (others are benched until they check in): waiting"
            );
            return;
        }
        // Registrations are written before a cohort is drawn from them, so a restarted server
        // draws the same cohort (a failing disk is logged; the round's commit will report it).
        if let Err(e) = lock(&self.store).flush() {
            warn!(error = %e, "registrations could not be written before drawing a cohort");
        }
        let size = self.config.cohort_size(eligible);
        let cohort = sample_cohort(
            st.registry.eligible(),
            size,
            self.config.seed,
            round,
            st.attempt,
        );
        let dp = match self.open_dp(st, cohort.len(), eligible) {
            Some(dp) => dp,
            None => return,
        };
        let deadline = Instant::now() + self.config.round_timeout;
        let mut aggregator = lock(&self.strategy).aggregator(&st.global.bundle);
        aggregator.set_parallel(self.config.parallel_fold);
        // A private round with adaptive clipping sends the "within" bit as one more word.
        let extra = usize::from(dp.as_ref().is_some_and(|d| d.within_word));
        let words = st.global.bundle.numel() + extra;
        let secagg = match self.open_secagg(round, st.attempt, &cohort, words) {
            Ok(s) => s,
            Err(e) => {
                warn!(round, attempt = st.attempt, error = %e, "secure round cannot open; waiting");
                return;
            }
        };
        info!(
            round,
            attempt = st.attempt,
            cohort = cohort.len(),
            target = self.config.clients_per_round,
            "round open: waiting -> training"
        );
        let mut open = OpenRound::new(
            round,
            st.attempt,
            st.global.version,
            cohort,
            deadline,
            aggregator,
        );
        open.secagg = secagg;
        open.dp = dp;
        st.phase = Phase::Training(Box::new(open));
        self.changed.notify_waiters();
        let me = Arc::clone(self);
        let attempt = st.attempt;
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            me.on_deadline(round, attempt);
        });
    }

    fn on_deadline(self: &Arc<Self>, round: u64, attempt: u32) {
        let mut st = lock(&self.state);
        let Phase::Training(r) = &st.phase else {
            return;
        };
        if r.round != round || r.attempt != attempt {
            return;
        }
        // Devices that missed the deadline are not drawn again until they check in anew.
        let missed = r.missed();
        if !missed.is_empty() {
            info!(
                round,
                attempt,
                missed = missed.len(),
                "devices missed the deadline: benched"
            );
        }
        for client in &missed {
            st.registry.bench(client);
        }
        let Phase::Training(r) = &st.phase else {
            return;
        };
        if let Some(sa) = &r.secagg {
            // Uploads close at the round's deadline; earlier stages should have closed by
            // now, and unmasking has its own.
            match sa.stage {
                Stage::Upload => self.close_secagg_stage(&mut st),
                Stage::Advertise | Stage::Share => {
                    warn!(
                        round,
                        attempt, "round deadline before uploads opened: new attempt"
                    );
                    self.new_attempt(&mut st);
                }
                Stage::Unmask | Stage::Ready => {}
            }
            return;
        }
        if r.commit_reason(
            self.config.clients_per_round,
            self.config.min_commit,
            Instant::now(),
        )
        .is_some()
        {
            self.maybe_commit(&mut st);
        } else {
            warn!(
                round,
                attempt,
                received = r.contributions.len(),
                min = self.config.min_commit,
                "deadline passed below the minimum: new attempt"
            );
            self.new_attempt(&mut st);
        }
    }

    /// Abandons the open attempt of the round and draws a new cohort (its updates are dropped).
    pub(crate) fn new_attempt(self: &Arc<Self>, st: &mut State) {
        st.attempt += 1;
        st.phase = Phase::Waiting;
        self.advance(st);
    }

    /// Commits the open round if it is ready: aggregate, apply, persist (off the async
    /// threads), then open the next round.
    pub(crate) fn maybe_commit(self: &Arc<Self>, st: &mut State) {
        let Phase::Training(r) = &st.phase else {
            return;
        };
        let Some(reason) = r.commit_reason(
            self.config.clients_per_round,
            self.config.min_commit,
            Instant::now(),
        ) else {
            return;
        };
        let round = r.round;
        let Phase::Training(r) = std::mem::replace(&mut st.phase, Phase::Aggregating { round })
        else {
            return;
        };
        info!(
            round = r.round,
            updates = r.contributions.len(),
            ?reason,
            "training -> aggregating"
        );
        self.changed.notify_waiters();
        let me = Arc::clone(self);
        let global = st.global.clone();
        tokio::spawn(async move {
            let job = {
                let me = Arc::clone(&me);
                tokio::task::spawn_blocking(move || me.commit(*r, &global, reason))
            };
            let outcome = job
                .await
                .unwrap_or_else(|e| Err(ServerError::Internal(format!("commit task failed: {e}"))));
            let mut st = lock(&me.state);
            match outcome {
                Ok(next) => {
                    st.global = Arc::new(next);
                    st.attempt = 0;
                }
                Err(e) => {
                    warn!(error = %e, "commit failed; the round is retried");
                    st.attempt += 1;
                }
            }
            st.phase = Phase::Waiting;
            me.advance(&mut st);
        });
    }

    fn commit(
        &self,
        mut r: OpenRound,
        global: &Global,
        reason: CommitReason,
    ) -> Result<Global, ServerError> {
        let mut aggregate = match r.secagg.as_mut() {
            Some(sa) => crate::secagg::aggregate(sa, &global.bundle, r.dp.as_mut())?,
            None => r.aggregator.finish()?,
        };
        let mut server_metrics = Vec::new();
        if let (Some(dp), Some(round)) = (&self.dp, &r.dp) {
            let store = lock(&self.store);
            let (private, metrics) =
                lock(dp).privatize(&store, aggregate, round, self.config.clients_per_round)?;
            aggregate = private;
            server_metrics = metrics;
        }
        let (next, saved) =
            self.apply_and_store(r.round, r.attempt, aggregate, &r.contributions, global)?;
        server_metrics.push(("cohort".to_string(), r.cohort.len() as f64));
        server_metrics.push((
            "round_seconds".to_string(),
            r.opened.elapsed().as_secs_f64(),
        ));
        lock(&self.store).insert_metrics(r.round, SERVER_METRICS, &server_metrics)?;
        info!(round = r.round, updates = r.contributions.len(), ?reason, digest = %saved.digest.to_hex(), "aggregating -> committed");
        Global::new(r.round, next)
    }

    /// The strategy's next model from `global` and the aggregate, stored as version `round`
    /// with its contributions in one commit. If the commit fails, the strategy's state is put
    /// back as it was, so memory never runs ahead of the last checkpoint.
    pub(crate) fn apply_and_store(
        &self,
        round: u64,
        attempt: u32,
        aggregate: Aggregate,
        contributions: &[Contribution],
        global: &Global,
    ) -> Result<(Bundle, CommittedRound), ServerError> {
        let total_weight = aggregate.total_weight;
        let mut strategy = lock(&self.strategy);
        let before = strategy.state();
        let next = strategy.apply(&global.bundle, aggregate)?;
        let state = strategy.state();
        let commit = RoundCommit {
            round,
            attempt,
            model: &next,
            strategy_state: state.as_ref(),
            contributions,
            total_weight,
        };
        match lock(&self.store).commit_round(&commit) {
            Ok(saved) => Ok((next, saved)),
            Err(e) => {
                match before {
                    Some(before) => strategy.restore(before)?,
                    None => strategy.reset(),
                }
                Err(e.into())
            }
        }
    }
}
