//! Check-ins: a device asks for work and gets a task, "finished", or (after a long-poll that
//! ends early when the round changes) "come back after N ms". Held calls are bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fedtune_proto::v1;
use rand::Rng;
use tracing::warn;

use crate::coordinator::{State, lock};
use crate::round::Phase;
use crate::{Coordinator, ServerError};

/// Check-ins held right now, in all and per connection.
#[derive(Debug, Default)]
pub(crate) struct HeldCalls {
    total: usize,
    per_connection: HashMap<SocketAddr, usize>,
}

/// A held call (check-in or secure-aggregation step), counted until dropped.
pub(crate) struct HeldCall<'a> {
    held: &'a Mutex<HeldCalls>,
    connection: Option<SocketAddr>,
}

impl<'a> HeldCall<'a> {
    /// Counts one more held call, unless `total` are held already, or `per_connection` on
    /// its connection (a connection full of held calls would leave its transfers no stream).
    pub(crate) fn enter(
        held: &'a Mutex<HeldCalls>,
        connection: Option<SocketAddr>,
        total: usize,
        per_connection: usize,
    ) -> Option<Self> {
        let mut h = lock(held);
        if h.total >= total {
            return None;
        }
        if let Some(addr) = connection {
            let n = h.per_connection.entry(addr).or_default();
            if *n >= per_connection {
                return None;
            }
            *n += 1;
        }
        h.total += 1;
        Some(HeldCall { held, connection })
    }
}

impl Drop for HeldCall<'_> {
    fn drop(&mut self) {
        let mut h = lock(self.held);
        h.total -= 1;
        if let Some(addr) = self.connection
            && let Some(n) = h.per_connection.get_mut(&addr)
        {
            *n -= 1;
            if *n == 0 {
                h.per_connection.remove(&addr);
            }
        }
    }
}

impl Coordinator {
    /// Answers a check-in: a task, "finished", or, after holding the call up to the long-poll
    /// time without a change that concerns this client, "come back after N ms". At most
    /// `max_held_check_ins` calls are held at once (each held call costs the server a stream
    /// and its buffers), and at most `max_held_per_connection` from one `connection` (the
    /// caller's address, when it has one): beyond that, "come back later" is answered at once.
    pub async fn check_in(
        self: &Arc<Self>,
        token: &str,
        connection: Option<SocketAddr>,
    ) -> Result<v1::CheckInResponse, ServerError> {
        use v1::check_in_response::Outcome;
        let client = self.authenticate(token)?;
        self.seen(&client);
        let until = Instant::now() + self.config.long_poll;
        let mut hold: Option<HeldCall<'_>> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let retry_ms = {
                let mut st = lock(&self.state);
                if let Some(outcome) = self.outcome_for(&mut st, &client) {
                    return Ok(v1::CheckInResponse {
                        outcome: Some(outcome),
                    });
                }
                let base = self.config.retry_after.as_millis() as f64;
                (base * st.rng.random_range(0.5..1.5)) as u64
            };
            let now = Instant::now();
            if hold.is_none() {
                hold = self.hold(connection);
            }
            if now >= until || hold.is_none() {
                return Ok(v1::CheckInResponse {
                    outcome: Some(Outcome::RetryAfterMs(retry_ms)),
                });
            }
            let _ = tokio::time::timeout(until - now, notified).await;
        }
    }

    /// Counts one more held call from `connection`, unless the limits are reached.
    pub(crate) fn hold(&self, connection: Option<SocketAddr>) -> Option<HeldCall<'_>> {
        HeldCall::enter(
            &self.held,
            connection,
            self.config.max_held_check_ins,
            self.config.max_held_per_connection,
        )
    }

    fn outcome_for(&self, st: &mut State, client: &str) -> Option<v1::check_in_response::Outcome> {
        use v1::check_in_response::Outcome;
        let rank = st.registry.lora_rank(client);
        let global = match st.global.at_rank(rank) {
            Ok(g) => g,
            Err(e) => {
                warn!(client, rank, error = %e, "cannot truncate the global adapter");
                return None;
            }
        };
        match &mut st.phase {
            Phase::Finished => Some(Outcome::Finished(v1::Finished {
                final_model_version: global.version,
            })),
            Phase::Training(r)
                if r.wants(client) && r.secagg.as_ref().is_none_or(|s| s.can_start(client)) =>
            {
                Some(Outcome::Task(v1::Task {
                    task_id: r.task_for(client, self.boot_id),
                    round: r.round,
                    model_version: r.model_version,
                    config: Some(self.config.training.to_wire()),
                    model: Some(global.encoded.header.to_wire()),
                    deadline_in_ms: r
                        .deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis() as u64,
                    secagg: r.secagg.as_ref().and_then(|s| s.setup_for(client)),
                    dp: self
                        .dp
                        .as_ref()
                        .zip(r.dp.as_ref())
                        .map(|(d, r)| lock(d).setup(r)),
                }))
            }
            Phase::Buffering(b) if st.registry.len() >= self.config.min_clients => {
                let settings = self.config.buffered.as_ref()?;
                let (task_id, version, deadline) = b.task_for(client, self.boot_id, settings)?;
                let model = match b.version(version).map(|g| g.at_rank(rank)) {
                    Some(Ok(g)) => g,
                    _ => return None,
                };
                Some(Outcome::Task(v1::Task {
                    task_id,
                    round: b.round,
                    model_version: version,
                    config: Some(self.config.training.to_wire()),
                    model: Some(model.encoded.header.to_wire()),
                    deadline_in_ms: deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis() as u64,
                    secagg: None,
                    dp: None,
                }))
            }
            _ => None,
        }
    }

    /// Records that `client` checked in: a new device now counts (and is stored), a benched
    /// one can be drawn again; either may let a round open.
    fn seen(self: &Arc<Self>, client: &str) {
        let mut st = lock(&self.state);
        let seen = st.registry.check_in(client);
        if let Some(caps) = &seen.counted {
            lock(&self.store).upsert_client(client, caps);
        }
        if seen.counted.is_some() || seen.unbenched {
            self.advance(&mut st);
        }
    }
}
