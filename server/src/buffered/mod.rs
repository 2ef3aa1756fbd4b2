//! Buffered asynchronous aggregation (FedBuff, Nguyen et al. 2022). There are no rounds to
//! wait for: a device that checks in is given a task on the newest model whenever fewer than
//! `concurrency` devices are training, trains, and uploads when it is done. Updates gather in
//! a buffer, each weighted by its staleness s (how many model versions were committed since
//! the one it trained on) times the strategy's weight: 1/√(1+s) by default. Every
//! `buffer_size` accepted updates the strategy applies the buffer's aggregate as the next
//! model version. Updates older than `max_staleness` versions are refused. A slow device
//! delays nobody, and its late work still counts, a little less.
//!
//! Durable like synchronous rounds: an update is written to the buffer's [`journal`] and
//! synced before it is acknowledged, and a version's commit records its contributions in the
//! same transaction as the model, after which the journal goes. A server killed at any point
//! reads the journal back and neither loses nor double-counts an acknowledged update.

pub mod journal;
mod lifecycle;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ServerError;
use crate::coordinator::Global;
use crate::store::Contribution;
use crate::strategy::Aggregator;
use journal::{Entry, Journal};

/// The settings of buffered asynchronous aggregation.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferedSettings {
    /// Updates per model version (FedBuff's K).
    pub buffer_size: usize,
    /// Updates trained on a model more than this many versions old are refused.
    pub max_staleness: u64,
    /// Devices training at once (tasks outstanding).
    pub concurrency: usize,
    /// How long a device may hold a task before it is given to another.
    pub task_timeout: Duration,
}

impl BufferedSettings {
    pub fn check(&self) -> Result<(), String> {
        if self.buffer_size == 0 {
            return Err("buffer_size must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.task_timeout.is_zero() {
            return Err("task_timeout must be longer than 0".into());
        }
        Ok(())
    }
}

/// FedBuff's staleness weight, 1/√(1+s).
pub fn staleness_weight(staleness: u64) -> f64 {
    1.0 / (1.0 + staleness as f64).sqrt()
}

/// A task given to a device.
#[derive(Debug)]
struct Issued {
    client: String,
    /// The model version it trains on.
    version: u64,
    deadline: Instant,
}

/// The buffer being filled and the tasks outstanding; lives for the whole federation.
pub struct Buffer {
    /// The model version this buffer will commit.
    pub round: u64,
    pub aggregator: Box<dyn Aggregator>,
    pub contributions: Vec<Contribution>,
    pub journal: Journal,
    /// When the buffer started filling: the previous commit, or the first task this process
    /// gave out (for the version's `round_seconds`).
    pub opened: Instant,
    /// task id → the task.
    tasks: HashMap<String, Issued>,
    /// client → its task id.
    task_of: BTreeMap<String, String>,
    /// Clients with an upload being received.
    uploading: HashSet<String>,
    /// The committed models a task may still train on (newest last).
    pub(crate) recent: VecDeque<Arc<Global>>,
    issued: u64,
}

impl Buffer {
    /// An empty buffer for version `global.version + 1`, refilled with `entries` (read back
    /// from its journal).
    pub(crate) fn new(
        global: Arc<Global>,
        mut aggregator: Box<dyn Aggregator>,
        journal: Journal,
        entries: Vec<Entry>,
    ) -> Result<Self, ServerError> {
        let mut contributions = Vec::with_capacity(entries.len());
        for e in entries {
            aggregator.fold(&e.update, e.contribution.weight)?;
            contributions.push(e.contribution);
        }
        Ok(Buffer {
            round: global.version + 1,
            aggregator,
            contributions,
            journal,
            opened: Instant::now(),
            tasks: HashMap::new(),
            task_of: BTreeMap::new(),
            uploading: HashSet::new(),
            recent: VecDeque::from([global]),
            issued: 0,
        })
    }

    /// The newest committed model.
    pub(crate) fn current(&self) -> &Arc<Global> {
        self.recent
            .back()
            .expect("the buffer always holds its base")
    }

    /// The committed model of `version`, if a task may still train on it.
    pub(crate) fn version(&self, version: u64) -> Option<&Arc<Global>> {
        self.recent.iter().find(|g| g.version == version)
    }

    /// Devices holding a task now.
    pub fn outstanding(&self) -> usize {
        self.tasks.len()
    }

    /// Forgets tasks past their deadline (their devices are too slow or gone), except those
    /// being uploaded.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.deadline <= now && !self.uploading.contains(&t.client))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(t) = self.tasks.remove(&id) {
                self.task_of.remove(&t.client);
            }
        }
    }

    /// The task of `client`: the one it holds, or a new one on the newest model if fewer than
    /// `settings.concurrency` devices are training. `(task id, version, deadline)`.
    pub fn task_for(
        &mut self,
        client: &str,
        boot_id: u32,
        settings: &BufferedSettings,
    ) -> Option<(String, u64, Instant)> {
        let now = Instant::now();
        self.expire(now);
        if let Some(id) = self.task_of.get(client)
            && let Some(t) = self.tasks.get(id)
        {
            if self.version(t.version).is_some() {
                return Some((id.clone(), t.version, t.deadline));
            }
            // Its model is too old to be served: a fresh task instead.
            let id = id.clone();
            self.forget(&id);
        }
        // One update per device and version (the store keys contributions so).
        if self.tasks.len() >= settings.concurrency || self.has_contributed(client) {
            return None;
        }
        if self.issued == 0 {
            // The federation's time starts with its first task, not with the server.
            self.opened = now;
        }
        let id = format!("{boot_id:08x}-b{}-{}", self.round, self.issued);
        self.issued += 1;
        let version = self.current().version;
        let deadline = now + settings.task_timeout;
        self.tasks.insert(
            id.clone(),
            Issued {
                client: client.to_string(),
                version,
                deadline,
            },
        );
        self.task_of.insert(client.to_string(), id.clone());
        Some((id, version, deadline))
    }

    fn has_contributed(&self, client: &str) -> bool {
        self.contributions.iter().any(|c| c.client_id == client)
    }

    fn forget(&mut self, task_id: &str) {
        if let Some(t) = self.tasks.remove(task_id) {
            self.task_of.remove(&t.client);
        }
    }

    /// Takes back `client`'s task `task_id` (a decline); whether it held it.
    pub fn decline(&mut self, client: &str, task_id: &str) -> bool {
        let owns = self.task_of.get(client).is_some_and(|t| t == task_id);
        if owns && !self.uploading.contains(client) {
            self.forget(task_id);
        }
        owns
    }

    /// How stale an update trained on `version` is, for the buffer being filled.
    pub fn staleness(&self, version: u64) -> u64 {
        (self.round - 1).saturating_sub(version)
    }

    /// Admission of an upload header; on success the client is marked as uploading.
    pub fn admit(
        &mut self,
        client: &str,
        task_id: &str,
        version: u64,
        max_staleness: u64,
    ) -> Result<(), ServerError> {
        let Some(t) = self.tasks.get(task_id) else {
            return Err(ServerError::UnknownTask(task_id.to_string()));
        };
        if t.client != client {
            return Err(ServerError::InvalidRequest(format!(
                "task `{task_id}` was issued to another client"
            )));
        }
        if version != t.version {
            return Err(ServerError::Stale(format!(
                "task `{task_id}` trains model version {}, not {version}",
                t.version
            )));
        }
        let s = self.staleness(version);
        if s > max_staleness {
            self.forget(task_id);
            return Err(ServerError::Stale(format!(
                "update trained on model version {version}, {s} versions old (at most \
                 {max_staleness} are accepted); check in for a new task"
            )));
        }
        if self.has_contributed(client) {
            return Err(ServerError::Duplicate {
                client: client.to_string(),
                round: self.round,
            });
        }
        if !self.uploading.insert(client.to_string()) {
            return Err(ServerError::UploadInProgress(task_id.to_string()));
        }
        Ok(())
    }

    /// Ends an upload that was admitted, whether or not it was accepted.
    pub fn release(&mut self, client: &str) {
        self.uploading.remove(client);
    }

    /// Journals (synced) and folds one accepted update, and retires its task.
    pub fn accept(&mut self, entry: Entry) -> Result<(), ServerError> {
        self.journal.append(&entry)?;
        self.aggregator
            .fold(&entry.update, entry.contribution.weight)?;
        self.forget(&entry.contribution.task_id);
        self.contributions.push(entry.contribution);
        Ok(())
    }

    /// After version `global` was committed: keeps it (and the versions a task may still
    /// train on), and starts the next buffer.
    pub(crate) fn advance(
        &mut self,
        global: Arc<Global>,
        aggregator: Box<dyn Aggregator>,
        journal: Journal,
        max_staleness: u64,
    ) -> Journal {
        self.round = global.version + 1;
        self.recent.push_back(global);
        while self.recent.len() as u64 > max_staleness + 1 {
            self.recent.pop_front();
        }
        self.aggregator = aggregator;
        self.contributions.clear();
        self.opened = Instant::now();
        std::mem::replace(&mut self.journal, journal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::WeightedSum;
    use fedtune_proto::{Bundle, Tensor};

    fn model(v: f32) -> Bundle {
        Bundle::new(vec![Tensor::from_f32("w", vec![2], &[v, v]).unwrap()]).unwrap()
    }

    fn settings(concurrency: usize) -> BufferedSettings {
        BufferedSettings {
            buffer_size: 2,
            max_staleness: 1,
            concurrency,
            task_timeout: Duration::from_secs(60),
        }
    }

    fn buffer(dir: &std::path::Path) -> Buffer {
        let global = Arc::new(Global::new(0, model(0.0)).unwrap());
        let (journal, entries) =
            Journal::open(dir, 1, 0, &global.bundle.manifest(), false).unwrap();
        let agg = Box::new(WeightedSum::new(&global.bundle));
        Buffer::new(global, agg, journal, entries).unwrap()
    }

    fn entry(client: &str, task: &str) -> Entry {
        Entry {
            contribution: Contribution {
                client_id: client.into(),
                task_id: task.into(),
                num_examples: 1,
                weight: 1.0,
            },
            staleness: 0,
            update: model(1.0),
        }
    }

    #[test]
    fn staleness_weight_is_fedbuffs() {
        assert_eq!(staleness_weight(0), 1.0);
        assert_eq!(staleness_weight(3), 0.5);
    }

    #[test]
    fn tasks_are_bounded_by_concurrency_and_kept_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = buffer(dir.path());
        let s = settings(2);
        let (t1, v1, _) = b.task_for("a", 7, &s).unwrap();
        assert_eq!(v1, 0);
        // Asking again gives the same task.
        assert_eq!(b.task_for("a", 7, &s).unwrap().0, t1);
        let (t2, _, _) = b.task_for("b", 7, &s).unwrap();
        assert!(
            b.task_for("c", 7, &s).is_none(),
            "two devices train already"
        );
        // A declined task frees its slot; a stranger cannot decline it.
        assert!(!b.decline("c", &t2));
        assert!(b.decline("b", &t2));
        assert!(b.task_for("c", 7, &s).is_some());
        // An upload: unknown task, someone else's task, wrong version are refused.
        assert!(matches!(
            b.admit("a", "nope", 0, 1),
            Err(ServerError::UnknownTask(_))
        ));
        assert!(b.admit("c", &t1, 0, 1).is_err());
        assert!(matches!(
            b.admit("a", &t1, 5, 1),
            Err(ServerError::Stale(_))
        ));
        b.admit("a", &t1, 0, 1).unwrap();
        assert!(matches!(
            b.admit("a", &t1, 0, 1),
            Err(ServerError::UploadInProgress(_))
        ));
        b.accept(entry("a", &t1)).unwrap();
        b.release("a");
        assert_eq!(b.contributions.len(), 1);
        assert_eq!(b.outstanding(), 1, "a's task is retired");
        // Its task is gone: a second upload of it is refused.
        assert!(b.admit("a", &t1, 0, 1).is_err());
    }

    #[test]
    fn expired_tasks_free_their_slot_and_stale_updates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = buffer(dir.path());
        let quick = BufferedSettings {
            task_timeout: Duration::from_millis(1),
            ..settings(1)
        };
        let (old, _, _) = b.task_for("a", 1, &quick).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let (fresh, _, _) = b.task_for("b", 1, &quick).unwrap();
        assert!(matches!(
            b.admit("a", &old, 0, 1),
            Err(ServerError::UnknownTask(_))
        ));

        // Two versions are committed while b trains on version 0: two versions stale.
        let s = settings(1);
        let mut b = buffer(dir.path());
        let (task, v, _) = b.task_for("b", 1, &s).unwrap();
        for version in 1..=2 {
            let g = Arc::new(Global::new(version, model(version as f32)).unwrap());
            let agg = Box::new(WeightedSum::new(&g.bundle));
            let (j, _) = Journal::open(
                dir.path(),
                version + 1,
                version,
                &g.bundle.manifest(),
                false,
            )
            .unwrap();
            b.advance(g, agg, j, s.max_staleness);
        }
        assert_eq!(b.staleness(v), 2);
        assert_eq!(b.recent.len(), 2, "versions 1 and 2 kept, 0 dropped");
        let e = b.admit("b", &task, v, s.max_staleness).unwrap_err();
        assert!(e.to_string().contains("2 versions old"), "{e}");
        let _ = fresh;
    }
}
