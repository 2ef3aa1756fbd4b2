//! Server settings for a federation.

use std::time::Duration;

use fedtune_proto::TrainingPlan;

/// How rounds are run. Defaults suit a small deployment; the simulation engine sets its own.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Rounds to commit before the federation finishes.
    pub rounds: u64,
    /// Updates a round needs to commit early (the target K).
    pub clients_per_round: usize,
    /// Cohort size as a multiple of K (over-selection absorbs dropouts, ~1.3 in practice).
    pub over_selection: f64,
    /// Fewest updates a round may commit with at its deadline; fewer abandons the attempt.
    pub min_commit: usize,
    /// Registered clients needed before the first round opens.
    pub min_clients: usize,
    /// Time a round attempt may take from opening to commit.
    pub round_timeout: Duration,
    /// A session token expires after this long unused.
    pub token_ttl: Duration,
    /// Most devices the registry holds (a join beyond it is refused as "busy, retry later").
    pub max_devices: usize,
    /// Admit only devices whose join is signed by a key listed in this file (one base64
    /// Ed25519 public key per line, optionally followed by the client id it may join as).
    pub authorized_keys: Option<std::path::PathBuf>,
    /// How long a check-in with nothing to do is held open waiting for a round to change.
    pub long_poll: Duration,
    /// Check-ins held at once; more are told "come back later" at once (each held call costs
    /// the server an HTTP/2 stream and its buffers, ~8 KB).
    pub max_held_check_ins: usize,
    /// Check-ins held at once from one connection: half of the calls a connection may have
    /// in flight ([`crate::MAX_STREAMS`]), so that its transfers always find a stream.
    pub max_held_per_connection: usize,
    /// A connection that sends nothing for this long is closed (longer than `long_poll`,
    /// which a held check-in may last with nothing sent but pings).
    pub idle_timeout: Duration,
    /// Base of the "come back later" hint; each answer is jittered ±50%.
    pub retry_after: Duration,
    /// Seed for cohort sampling and pace-steering jitter.
    pub seed: u64,
    /// Uploads staged in memory at once; others wait (bounds memory to O(model)).
    pub max_concurrent_uploads: usize,
    /// Largest update accepted, in bytes (raw or encoded).
    pub max_update_bytes: u64,
    /// Chunk size for downloads.
    pub chunk_bytes: usize,
    /// Local training settings sent with every task.
    pub training: TrainingPlan,
    /// fsync checkpoints and the database on commit (off only for throwaway benchmarks).
    pub durable: bool,
    /// How long the server keeps answering "finished" before it stops.
    pub linger: Duration,
    /// Committed checkpoints kept on disk: the newest N (0 keeps every one, the default).
    /// A restart needs only the newest; older ones are history (each round's model).
    pub keep_checkpoints: u64,
    /// Fold each update on every core instead of on the thread that received it. Worth it
    /// only where folding is the server's main work (the in-process simulation turns it on);
    /// a gRPC server's cores serve connections, and rayon's idle workers spinning after each
    /// fold took CPU from them (overhead benchmark over gRPC: median of 6 pairs 13% faster
    /// without).
    pub parallel_fold: bool,
    /// Aggregate securely (SecAgg+): the server sees only the cohort's sum.
    pub secagg: Option<crate::secagg::settings::SecAggSettings>,
    /// Differential privacy (user-level DP-FedAvg): clipped updates, noised sums, ε reported.
    pub dp: Option<crate::dp::DpSettings>,
    /// Buffered asynchronous aggregation (FedBuff) instead of synchronous rounds: every
    /// `buffer_size` updates make a model version, and `rounds` counts versions.
    pub buffered: Option<crate::buffered::BufferedSettings>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            rounds: 10,
            clients_per_round: 10,
            over_selection: 1.3,
            min_commit: 8,
            min_clients: 10,
            round_timeout: Duration::from_secs(600),
            token_ttl: Duration::from_secs(3600),
            max_devices: 100_000,
            authorized_keys: None,
            long_poll: Duration::from_secs(5),
            max_held_check_ins: 256,
            max_held_per_connection: crate::MAX_STREAMS as usize / 2,
            idle_timeout: Duration::from_secs(20),
            retry_after: Duration::from_secs(2),
            seed: 0,
            max_concurrent_uploads: 2,
            max_update_bytes: 4 << 30,
            chunk_bytes: fedtune_proto::MAX_CHUNK_BYTES,
            training: TrainingPlan::default(),
            durable: true,
            linger: Duration::from_secs(3),
            keep_checkpoints: 0,
            parallel_fold: false,
            secagg: None,
            dp: None,
            buffered: None,
        }
    }
}

impl ServerConfig {
    /// Cohort size for a round given how many clients are registered.
    pub fn cohort_size(&self, registered: usize) -> usize {
        let want = (self.clients_per_round as f64 * self.over_selection.max(1.0)).ceil() as usize;
        want.max(self.clients_per_round).min(registered)
    }
}

impl ServerConfig {
    /// Checks every setting a federation cannot run with, naming the first one found: the
    /// one validation the CLI, a `--job` and the simulation all go through (in
    /// [`crate::Coordinator::open`], before any state is created).
    pub fn validate(&self) -> Result<(), crate::ServerError> {
        let bad =
            |setting: &'static str, why: String| Err(crate::ServerError::Config { setting, why });
        let k = self.clients_per_round;
        if self.rounds == 0 {
            return bad("rounds", "must be at least 1".into());
        }
        if k == 0 {
            return bad("clients_per_round", "must be at least 1".into());
        }
        if !(self.over_selection.is_finite() && self.over_selection >= 1.0) {
            return bad(
                "over_selection",
                format!("{} is not a number ≥ 1", self.over_selection),
            );
        }
        if !(1..=k).contains(&self.min_commit) {
            return bad(
                "min_commit",
                format!(
                    "{} is not between 1 and clients_per_round = {k}",
                    self.min_commit
                ),
            );
        }
        if self.min_clients < self.min_commit {
            return bad(
                "min_clients",
                format!(
                    "{} is fewer than min_commit = {}: no round could commit",
                    self.min_clients, self.min_commit
                ),
            );
        }
        if self.max_devices < self.min_clients {
            return bad(
                "max_devices",
                format!(
                    "{} is fewer than min_clients = {}: no round could open",
                    self.max_devices, self.min_clients
                ),
            );
        }
        if self.idle_timeout <= self.long_poll {
            return bad(
                "idle_timeout",
                format!(
                    "{:?} is not longer than long_poll = {:?}: held check-ins would be cut",
                    self.idle_timeout, self.long_poll
                ),
            );
        }
        if self.round_timeout.is_zero() {
            return bad("round_timeout", "must be longer than 0".into());
        }
        if self.chunk_bytes == 0 || self.chunk_bytes > fedtune_proto::MAX_CHUNK_BYTES {
            return bad(
                "chunk_bytes",
                format!(
                    "{} is not in 1..={}",
                    self.chunk_bytes,
                    fedtune_proto::MAX_CHUNK_BYTES
                ),
            );
        }
        if let Some(s) = &self.secagg {
            let cohort = self.cohort_size(usize::MAX);
            if let Err(why) = s.sizing(cohort) {
                return bad("secagg", why);
            }
        }
        if let Some(dp) = &self.dp
            && let Err(why) = dp.check(self.secagg.is_some())
        {
            return bad("dp", why);
        }
        if let Some(b) = &self.buffered {
            if let Err(why) = b.check() {
                return bad("buffered", why);
            }
            if self.secagg.is_some() || self.dp.is_some() {
                return bad(
                    "buffered",
                    "buffered asynchronous aggregation runs without secagg and without \
                     differential privacy (both need a cohort that trains one model together)"
                        .into(),
                );
            }
        }
        let t = &self.training;
        if t.local_steps == 0 {
            return bad("local_steps", "must be at least 1".into());
        }
        if t.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                format!("{} is not a positive number", t.learning_rate),
            );
        }
        Ok(())
    }

    /// The settings a federation's result depends on, as stored with its state: a restart with
    /// any of them changed is refused, naming it.
    pub(crate) fn pinned(&self) -> [(&'static str, String); 7] {
        [
            ("rounds", self.rounds.to_string()),
            ("clients_per_round", self.clients_per_round.to_string()),
            ("over_selection", self.over_selection.to_string()),
            ("training", format!("{:?}", self.training)),
            ("secagg", format!("{:?}", self.secagg)),
            // δ, the budget and the noise seed may change across a restart; the mechanism not.
            (
                "dp",
                format!(
                    "{:?}",
                    self.dp.as_ref().map(|d| (
                        d.noise_multiplier,
                        d.clip,
                        d.adaptive,
                        d.distributed
                    ))
                ),
            ),
            (
                "buffered",
                format!(
                    "{:?}",
                    self.buffered
                        .as_ref()
                        .map(|b| (b.buffer_size, b.max_staleness))
                ),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_a_federation_cannot_run_with_are_named() {
        assert!(ServerConfig::default().validate().is_ok());
        type Break = fn(&mut ServerConfig);
        let cases: [(&str, Break); 11] = [
            ("rounds", |c| c.rounds = 0),
            ("clients_per_round", |c| c.clients_per_round = 0),
            ("over_selection", |c| c.over_selection = 0.5),
            ("min_commit", |c| c.min_commit = c.clients_per_round + 1),
            ("min_clients", |c| c.min_clients = 1),
            ("round_timeout", |c| c.round_timeout = Duration::ZERO),
            ("max_devices", |c| c.max_devices = c.min_clients - 1),
            ("idle_timeout", |c| c.idle_timeout = c.long_poll),
            ("local_steps", |c| c.training.local_steps = 0),
            ("batch_size", |c| c.training.batch_size = 0),
            ("learning_rate", |c| c.training.learning_rate = f32::NAN),
        ];
        for (setting, break_it) in cases {
            let mut c = ServerConfig::default();
            break_it(&mut c);
            let err = c.validate().unwrap_err();
            assert!(
                matches!(&err, crate::ServerError::Config { setting: s, .. } if *s == setting),
                "{setting}: {err}"
            );
        }
    }
}
