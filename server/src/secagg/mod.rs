//! Secure aggregation (SecAgg+) carried over `fedtune.v1`: the round's protocol state
//! ([`round`]), its settings ([`settings`]), and the coordinator's side of the `SecAgg` call.
//!
//! Each step rides a long-poll, as check-ins do: a device sends its step (keys, shares, a poll
//! for the unmask request, its reveals) and is answered once the round reaches that step's
//! answer, or told to send it again. Stages close when every device has done its part, or at
//! their deadline; a stage left with fewer than t devices abandons the attempt and a new
//! cohort is drawn, with fresh keys (devices never reuse
//! theirs) and a fresh context.

pub mod round;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use fedtune_proto::{Bundle, v1};
use fedtune_secagg::quantize::WITHIN_SCALE;
use rand::Rng;
use tracing::{info, warn};

use crate::check_in::HeldCall;
use crate::coordinator::{State, lock};
use crate::round::Phase;
use crate::strategy::Aggregate;
use crate::{Coordinator, ServerError};
use round::{Closed, SecAggRound, Stage};

/// Store key of the last secure round attempt opened (`round:attempt`): a restarted server
/// opens the next attempt, never the same one again.
pub(crate) const OPEN_ATTEMPT: &str = "secagg_open_attempt";

impl Coordinator {
    /// One step of a device's secure aggregation (see [`v1::SecAggRequest`]).
    /// Held calls count with check-ins against the same limits (`connection` is the
    /// caller's address, when it has one): a call that cannot be held is told to come again.
    pub async fn secagg(
        self: &Arc<Self>,
        token: &str,
        req: v1::SecAggRequest,
        connection: Option<SocketAddr>,
    ) -> Result<v1::SecAggResponse, ServerError> {
        use v1::sec_agg_request::Step;
        use v1::sec_agg_response::Outcome;
        let client = self.authenticate(token)?;
        let step = req
            .step
            .ok_or_else(|| ServerError::InvalidRequest("SecAgg request without a step".into()))?;
        let until = Instant::now() + self.config.long_poll;
        let mut submitted = false;
        let mut hold: Option<HeldCall<'_>> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let retry_ms = {
                let mut st = lock(&self.state);
                if !submitted {
                    let sa = secagg_of(&mut st, &client, &req.task_id, req.round)?;
                    match &step {
                        Step::Advertise(keys) => sa.advertise(&client, keys.clone())?,
                        Step::Share(shares) => sa.share(&client, shares.clone())?,
                        Step::Unmask(_) => {}
                        Step::Reveal(reveals) => sa.reveal(&client, reveals)?,
                    }
                    submitted = true;
                    if sa.stage_complete() {
                        self.close_secagg_stage(&mut st);
                    }
                    if let Step::Reveal(_) = step {
                        // Taken: the round may have committed on it already.
                        return Ok(v1::SecAggResponse {
                            outcome: Some(Outcome::Done(v1::SecAggPoll {})),
                        });
                    }
                }
                let sa = secagg_of(&mut st, &client, &req.task_id, req.round)?;
                let answer = match &step {
                    Step::Advertise(_) => sa.adverts_for(&client)?.map(Outcome::Adverts),
                    Step::Share(_) => sa.inbox_for(&client)?.map(Outcome::Inbox),
                    Step::Unmask(_) => sa.unmask_for(&client)?.map(Outcome::Unmask),
                    Step::Reveal(_) => None,
                };
                if let Some(outcome) = answer {
                    return Ok(v1::SecAggResponse {
                        outcome: Some(outcome),
                    });
                }
                let base = self.config.retry_after.as_millis() as f64 / 4.0;
                (base * st.rng.random_range(0.5..1.5)) as u64
            };
            let now = Instant::now();
            if hold.is_none() {
                hold = self.hold(connection);
            }
            if now >= until || hold.is_none() {
                return Ok(v1::SecAggResponse {
                    outcome: Some(Outcome::RetryAfterMs(retry_ms.max(1))),
                });
            }
            let _ = tokio::time::timeout(until - now, notified).await;
        }
    }

    /// A fresh secure round for the cohort of a new attempt (`None` without `--secagg`),
    /// recorded durably first so that a restart never opens this attempt again.
    pub(crate) fn open_secagg(
        self: &Arc<Self>,
        round: u64,
        attempt: u32,
        cohort: &std::collections::BTreeSet<String>,
        params: usize,
    ) -> Result<Option<SecAggRound>, ServerError> {
        let Some(settings) = &self.config.secagg else {
            return Ok(None);
        };
        let sizing = settings
            .sizing(cohort.len())
            .map_err(|why| ServerError::Config {
                setting: "secagg",
                why,
            })?;
        lock(&self.store).set_meta(OPEN_ATTEMPT, &format!("{round}:{attempt}"))?;
        let mut rng = rand::rng();
        let mut context = fedtune_secagg::keys::round_context(round, attempt);
        context.extend_from_slice(&rng.random::<[u8; 16]>());
        let deadline = Instant::now() + settings.stage_timeout;
        info!(
            round,
            attempt,
            neighbours = sizing.neighbours,
            threshold = sizing.threshold,
            max_weight = sizing.max_weight,
            "secure aggregation: advertising keys"
        );
        self.stage_timer(round, attempt, Stage::Advertise, deadline);
        Ok(Some(SecAggRound::new(
            cohort,
            sizing,
            self.config.min_commit,
            params,
            rng.random(),
            context,
            deadline,
        )))
    }

    fn stage_timer(self: &Arc<Self>, round: u64, attempt: u32, stage: Stage, at: Instant) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let mut st = lock(&me.state);
            if let Phase::Training(r) = &st.phase
                && r.round == round
                && r.attempt == attempt
                && r.secagg.as_ref().is_some_and(|s| s.stage == stage)
            {
                info!(round, attempt, ?stage, "secure aggregation: stage deadline");
                me.close_secagg_stage(&mut st);
            }
        });
    }

    /// Closes the open round's protocol stage: opens the next (with its timer), commits once
    /// every reveal is in, or abandons the attempt.
    pub(crate) fn close_secagg_stage(self: &Arc<Self>, st: &mut State) {
        let Phase::Training(r) = &mut st.phase else {
            return;
        };
        let (round, attempt, round_deadline) = (r.round, r.attempt, r.deadline);
        let Some(sa) = &mut r.secagg else {
            return;
        };
        let stage_timeout = self
            .config
            .secagg
            .as_ref()
            .map(|s| s.stage_timeout)
            .unwrap_or_default();
        let next_deadline = match sa.stage {
            Stage::Share => round_deadline,
            _ => Instant::now() + stage_timeout,
        };
        match sa.close(next_deadline) {
            Closed::Next(Stage::Ready) => {
                info!(round, attempt, "secure aggregation: every reveal in");
                self.maybe_commit(st);
            }
            Closed::Next(stage) => {
                info!(round, attempt, ?stage, "secure aggregation: next stage");
                if stage != Stage::Upload {
                    self.stage_timer(round, attempt, stage, next_deadline);
                }
                self.changed.notify_waiters();
            }
            Closed::Abandon(why) => {
                warn!(
                    round,
                    attempt, why, "secure aggregation abandoned: new attempt"
                );
                self.new_attempt(st);
            }
        }
    }
}

/// The open round's protocol, if `client` holds `task_id` of `round` in it.
fn secagg_of<'a>(
    st: &'a mut State,
    client: &str,
    task_id: &str,
    round: u64,
) -> Result<&'a mut SecAggRound, ServerError> {
    let Phase::Training(r) = &mut st.phase else {
        return Err(ServerError::Stale(format!("round {round} is not open")));
    };
    if r.round != round || !r.owns_task(client, task_id) {
        return Err(ServerError::Stale(format!(
            "task `{task_id}` of round {round} is not open (round {} attempt {} is)",
            r.round, r.attempt
        )));
    }
    r.secagg
        .as_mut()
        .ok_or_else(|| ServerError::InvalidRequest("this round does not aggregate securely".into()))
}

/// Unmasks the round's sum and decodes it into the mean update, tensor by tensor in the
/// global model's order.
pub(crate) fn aggregate(
    sa: &mut SecAggRound,
    global: &Bundle,
    dp: Option<&mut crate::dp::RoundDp>,
) -> Result<Aggregate, ServerError> {
    let sum = sa
        .finish()
        .map_err(|e| ServerError::SecAggAbandoned(e.to_string()))?;
    let quantizer = sa.sizing().quantizer;
    let (mean, total): (Vec<f64>, u32) = match dp {
        None => {
            let (mean, total) = quantizer.decode(&sum);
            (mean.into_iter().map(f64::from).collect(), total)
        }
        // Under differential privacy every weight is 1 and the words may carry noise: the
        // sum is read as signed, the within word split off, and the count is the survivors'
        // (not the weight word, which a device could misstate).
        Some(dp) => {
            let (_, mut words) = sum
                .split_last()
                .ok_or_else(|| ServerError::Internal("an empty secure sum".into()))?;
            let n = sa.survivors().len() as u32;
            if dp.within_word
                && let Some((&within, values)) = words.split_last()
            {
                dp.within = f64::from(within as i32) / f64::from(WITHIN_SCALE);
                words = values;
            }
            let per = f64::from(n.max(1));
            let mean = quantizer
                .decode_sum(words, n)
                .into_iter()
                .map(|s| s / per)
                .collect();
            (mean, n)
        }
    };
    let mut values = mean.into_iter();
    let mean = global
        .tensors()
        .iter()
        .map(|t| values.by_ref().take(t.numel()).collect())
        .collect();
    Ok(Aggregate {
        mean,
        total_weight: f64::from(total),
        count: sa.survivors().len(),
    })
}
