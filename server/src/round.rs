//! The round as an explicit state machine.
//!
//! ```text
//!  Waiting ──(enough clients)──► Training ──(K updates, or deadline with ≥ min)──► Aggregating
//!     ▲                            │  ▲                                                │
//!     │                            │  └──(deadline with < min: new attempt)            │
//!     └────────────────────────────┴───────────(committed; more rounds)◄───────────────┘
//!                                                 (committed; last round) ──► Finished
//! ```
//! The coordinator feeds it events under one lock; this module holds the per-round
//! bookkeeping and the rules, with no I/O.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::IteratorRandom;
use rand_chacha::ChaCha8Rng;

use crate::ServerError;
use crate::store::Contribution;
use crate::strategy::Aggregator;

/// Where the federation is.
pub enum Phase {
    /// Too few registered clients to open the next round.
    Waiting,
    /// A round is open: its cohort downloads, trains and uploads.
    Training(Box<OpenRound>),
    /// A round's aggregate is being applied and persisted.
    Aggregating { round: u64 },
    /// Buffered asynchronous aggregation: devices train whenever they check in, and every
    /// `buffer_size` updates make a version (see [`crate::buffered`]).
    Buffering(Box<crate::buffered::Buffer>),
    /// All configured rounds are committed.
    Finished,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Training(_) => "training",
            Phase::Aggregating { .. } => "aggregating",
            Phase::Buffering(_) => "buffering",
            Phase::Finished => "finished",
        }
    }
}

/// Why an open round should commit now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitReason {
    /// The target K of updates arrived.
    Target,
    /// The deadline passed with at least the minimum.
    Deadline,
}

/// Bookkeeping of one open round attempt.
pub struct OpenRound {
    pub round: u64,
    pub attempt: u32,
    /// Model version the round trains from.
    pub model_version: u64,
    /// Clients selected for this attempt.
    pub cohort: BTreeSet<String>,
    /// task id → client it was issued to.
    tasks: HashMap<String, String>,
    /// client → its task id.
    task_of: HashMap<String, String>,
    /// Clients with an upload being received right now.
    uploading: BTreeSet<String>,
    /// Accepted, folded updates.
    pub contributions: Vec<Contribution>,
    pub deadline: Instant,
    /// When this attempt opened.
    pub opened: Instant,
    pub aggregator: Box<dyn Aggregator>,
    /// The round's secure aggregation, when it aggregates securely (then `aggregator` is
    /// unused: masked updates are summed there).
    pub secagg: Option<crate::secagg::round::SecAggRound>,
    /// The round's privacy parameters, when rounds are differentially private.
    pub dp: Option<crate::dp::RoundDp>,
}

impl OpenRound {
    pub fn new(
        round: u64,
        attempt: u32,
        model_version: u64,
        cohort: BTreeSet<String>,
        deadline: Instant,
        aggregator: Box<dyn Aggregator>,
    ) -> Self {
        OpenRound {
            round,
            attempt,
            model_version,
            cohort,
            tasks: HashMap::new(),
            task_of: HashMap::new(),
            uploading: BTreeSet::new(),
            contributions: Vec::new(),
            deadline,
            opened: Instant::now(),
            aggregator,
            secagg: None,
            dp: None,
        }
    }

    /// Whether `client` still has work in this round.
    pub fn wants(&self, client: &str) -> bool {
        self.cohort.contains(client) && !self.has_contributed(client)
    }

    pub fn has_contributed(&self, client: &str) -> bool {
        self.contributions.iter().any(|c| c.client_id == client)
    }

    /// The client's task id, issuing one on first ask (the same one again on a retry).
    pub fn task_for(&mut self, client: &str, boot_id: u32) -> String {
        if let Some(t) = self.task_of.get(client) {
            return t.clone();
        }
        let id = format!(
            "{boot_id:08x}-r{}-a{}-{}",
            self.round,
            self.attempt,
            self.tasks.len()
        );
        self.tasks.insert(id.clone(), client.to_string());
        self.task_of.insert(client.to_string(), id.clone());
        id
    }

    /// Whether `task_id` is the task issued to `client`.
    pub fn owns_task(&self, client: &str, task_id: &str) -> bool {
        self.task_of.get(client).is_some_and(|t| t == task_id)
    }

    /// Admission rules for an upload header; on success the client is marked as uploading.
    pub fn admit(
        &mut self,
        client: &str,
        task_id: &str,
        round: u64,
        version: u64,
    ) -> Result<(), ServerError> {
        if round != self.round {
            return Err(ServerError::Stale(format!(
                "round {round} is not open; the open round is {}",
                self.round
            )));
        }
        if version != self.model_version {
            return Err(ServerError::Stale(format!(
                "update trained on model version {version}; round {} trains version {}",
                self.round, self.model_version
            )));
        }
        match self.tasks.get(task_id) {
            None => return Err(ServerError::UnknownTask(task_id.to_string())),
            Some(owner) if owner != client => {
                return Err(ServerError::InvalidRequest(format!(
                    "task `{task_id}` was issued to another client"
                )));
            }
            Some(_) => {}
        }
        if self.has_contributed(client) {
            return Err(ServerError::Duplicate {
                client: client.to_string(),
                round,
            });
        }
        if !self.uploading.insert(client.to_string()) {
            return Err(ServerError::UploadInProgress(task_id.to_string()));
        }
        Ok(())
    }

    /// Takes `client` out of the cohort if `task_id` is its task and it has neither
    /// contributed nor started uploading; whether it did.
    pub fn decline(&mut self, client: &str, task_id: &str) -> bool {
        if !self.owns_task(client, task_id)
            || self.has_contributed(client)
            || self.uploading.contains(client)
        {
            return false;
        }
        self.cohort.remove(client)
    }

    /// Cohort members with no update in and none arriving.
    pub fn missed(&self) -> Vec<String> {
        self.cohort
            .iter()
            .filter(|c| !self.has_contributed(c) && !self.uploading.contains(*c))
            .cloned()
            .collect()
    }

    /// Ends an upload that was admitted, whether or not it was accepted.
    pub fn release(&mut self, client: &str) {
        self.uploading.remove(client);
    }

    /// Whether the round should commit now, given the target K and the minimum.
    pub fn commit_reason(
        &self,
        target: usize,
        min_commit: usize,
        now: Instant,
    ) -> Option<CommitReason> {
        if let Some(sa) = &self.secagg {
            // Secure rounds commit once unmasking is done, whatever the count.
            return (sa.stage == crate::secagg::round::Stage::Ready)
                .then_some(CommitReason::Target);
        }
        let n = self.contributions.len();
        if n >= target.min(self.cohort.len()).max(1) {
            Some(CommitReason::Target)
        } else if now >= self.deadline && n >= min_commit.max(1) {
            Some(CommitReason::Deadline)
        } else {
            None
        }
    }
}

/// Samples a round's cohort from the registered clients, reproducibly from (seed, round, attempt).
pub fn sample_cohort<'a>(
    registered: impl Iterator<Item = &'a String>,
    size: usize,
    seed: u64,
    round: u64,
    attempt: u32,
) -> BTreeSet<String> {
    let mix = seed
        ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(attempt).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut rng = ChaCha8Rng::seed_from_u64(mix);
    registered
        .choose_multiple(&mut rng, size)
        .into_iter()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{FedAvg, Strategy};
    use fedtune_proto::{Bundle, Tensor};
    use std::time::Duration;

    fn open(cohort: &[&str]) -> OpenRound {
        let g = Bundle::new(vec![Tensor::from_f32("w", vec![1], &[0.0]).unwrap()]).unwrap();
        let cohort = cohort.iter().map(|s| s.to_string()).collect();
        OpenRound::new(
            4,
            0,
            3,
            cohort,
            Instant::now() + Duration::from_secs(60),
            FedAvg.aggregator(&g),
        )
    }

    #[test]
    fn cohort_sampling_is_reproducible_and_varies_by_round() {
        let clients: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
        let a = sample_cohort(clients.iter(), 10, 7, 1, 0);
        assert_eq!(a.len(), 10);
        assert_eq!(a, sample_cohort(clients.iter(), 10, 7, 1, 0));
        assert_ne!(a, sample_cohort(clients.iter(), 10, 7, 2, 0));
        assert_ne!(a, sample_cohort(clients.iter(), 10, 7, 1, 1));
    }

    #[test]
    fn admission_refuses_stale_unknown_foreign_and_concurrent() {
        let mut r = open(&["a", "b"]);
        let ta = r.task_for("a", 1);
        assert_eq!(ta, r.task_for("a", 1), "a retry gets the same task");
        let tb = r.task_for("b", 1);
        assert!(matches!(
            r.admit("a", &ta, 3, 3),
            Err(ServerError::Stale(_))
        ));
        assert!(matches!(
            r.admit("a", &ta, 4, 2),
            Err(ServerError::Stale(_))
        ));
        assert!(matches!(
            r.admit("a", "nope", 4, 3),
            Err(ServerError::UnknownTask(_))
        ));
        assert!(matches!(
            r.admit("a", &tb, 4, 3),
            Err(ServerError::InvalidRequest(_))
        ));
        r.admit("a", &ta, 4, 3).unwrap();
        assert!(matches!(
            r.admit("a", &ta, 4, 3),
            Err(ServerError::UploadInProgress(_))
        ));
        r.release("a");
        r.contributions.push(Contribution {
            client_id: "a".into(),
            task_id: ta.clone(),
            num_examples: 1,
            weight: 1.0,
        });
        assert!(matches!(
            r.admit("a", &ta, 4, 3),
            Err(ServerError::Duplicate { .. })
        ));
    }

    #[test]
    fn commits_at_target_or_at_deadline_with_minimum() {
        let mut r = open(&["a", "b", "c"]);
        let now = Instant::now();
        let push = |r: &mut OpenRound, c: &str| {
            r.contributions.push(Contribution {
                client_id: c.into(),
                task_id: String::new(),
                num_examples: 1,
                weight: 1.0,
            })
        };
        push(&mut r, "a");
        assert_eq!(r.commit_reason(2, 1, now), None);
        assert_eq!(
            r.commit_reason(2, 1, r.deadline),
            Some(CommitReason::Deadline)
        );
        assert_eq!(r.commit_reason(2, 2, r.deadline), None);
        push(&mut r, "b");
        assert_eq!(r.commit_reason(2, 1, now), Some(CommitReason::Target));
    }
}
