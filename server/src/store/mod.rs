//! Durable server state: an embedded SQLite database (clients, rounds, contributions, metrics)
//! beside a folder of safetensors checkpoints, one per committed model version.
//!
//! A round commits by writing its checkpoint (temp file, fsync, rename) and then, in one SQLite
//! transaction, the round row and its contributors. A crash before the transaction leaves an
//! orphan file that the next commit of that round overwrites; a crash after it loses nothing.
//! Contributions are written only with their round, so no update is ever counted twice.

mod checkpoint;

use std::path::{Path, PathBuf};

use fedtune_proto::{Bundle, Digest};
use rusqlite::{Connection, OptionalExtension, params};

pub use checkpoint::{read_checkpoint, write_checkpoint};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state in {0} is in use by another server (one server per state directory)")]
    InUse(PathBuf),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(
        "state in {dir} was created with {what} {stored}, this server was started with {given}"
    )]
    Mismatch {
        dir: PathBuf,
        what: &'static str,
        stored: String,
        given: String,
    },
}

/// A committed model version as recorded in the database.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedRound {
    pub round: u64,
    pub model_version: u64,
    pub checkpoint: PathBuf,
    pub digest: Digest,
}

/// One accepted update, recorded when its round commits.
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    pub client_id: String,
    pub task_id: String,
    pub num_examples: u64,
    pub weight: f64,
}

/// What a round commit writes.
#[derive(Debug)]
pub struct RoundCommit<'a> {
    pub round: u64,
    pub attempt: u32,
    pub model: &'a Bundle,
    pub strategy_state: Option<&'a Bundle>,
    pub contributions: &'a [Contribution],
    pub total_weight: f64,
}

/// The database's file name in a state directory.
const DB_FILE: &str = "state.sqlite";
/// Locked by the server that owns a state directory, for its whole life.
const LOCK_FILE: &str = "server.lock";

/// The server's state directory: `state.sqlite` plus `checkpoints/`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: Connection,
    /// Held locked while the store is open: one server per state directory.
    _lock: std::fs::File,
    durable: bool,
    /// Checkpoints kept: the newest N committed ones (0 keeps all).
    keep_checkpoints: u64,
    /// Metric rows not yet written: (round, client, name, value).
    metrics: Vec<(u64, String, String, f64)>,
    /// Registrations not yet written: (client, capabilities).
    registrations: Vec<(String, String)>,
}

impl Store {
    /// Opens (creating if needed) the state in `dir`.
    pub fn open(dir: &Path, durable: bool) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir.join("checkpoints")).map_err(io)?;
        let lock = std::fs::File::create(dir.join(LOCK_FILE)).map_err(io)?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::InUse(dir.to_path_buf()),
            std::fs::TryLockError::Error(e) => io(e),
        })?;
        let db = open_db(&dir.join(DB_FILE), durable)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            db,
            _lock: lock,
            durable,
            keep_checkpoints: 0,
            metrics: Vec::new(),
            registrations: Vec::new(),
        })
    }

    /// Keeps only the newest `keep` checkpoints (0, the default, keeps every one): after each
    /// commit, the files of older rounds are deleted. Their rows (who contributed, weights,
    /// digests) stay in the database; a restart only ever needs the newest checkpoint.
    pub fn keep_checkpoints(&mut self, keep: u64) {
        self.keep_checkpoints = keep;
    }

    /// Records a setting the state was created with, or checks it matches the stored one.
    pub fn pin_setting(&self, key: &'static str, value: &str) -> Result<(), StoreError> {
        let stored: Option<String> = self
            .db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        match stored {
            Some(s) if s != value => Err(StoreError::Mismatch {
                dir: self.dir.clone(),
                what: key,
                stored: s,
                given: value.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                self.db
                    .execute("INSERT INTO meta(key, value) VALUES (?1, ?2)", [key, value])?;
                Ok(())
            }
        }
    }

    /// Sets a state value that changes over the federation's life (written durably at once).
    pub fn set_meta(&self, key: &'static str, value: &str) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// A value [`Store::set_meta`] or [`Store::pin_setting`] stored.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Records a client's registration. Written with the next [`Store::flush`], which the
    /// coordinator runs before it draws a cohort, so a cohort is only ever drawn from
    /// registrations that survive a crash (a restarted server draws the same one).
    pub fn upsert_client(&mut self, client_id: &str, capabilities: &str) {
        self.registrations
            .push((client_id.to_string(), capabilities.to_string()));
    }

    pub fn clients(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT client_id FROM clients ORDER BY client_id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest committed model version, if any.
    pub fn last_committed(&self) -> Result<Option<CommittedRound>, StoreError> {
        let row = self
            .db
            .query_row(
                "SELECT round, model_version, checkpoint, digest FROM rounds ORDER BY round DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)),
            )
            .optional()?;
        row.map(|(round, version, file, digest)| {
            let checkpoint = self.dir.join("checkpoints").join(&file);
            let digest = Digest::from_hex(&digest).ok_or_else(|| StoreError::Checkpoint {
                path: checkpoint.clone(),
                reason: "bad digest in database".into(),
            })?;
            Ok(CommittedRound {
                round: round as u64,
                model_version: version as u64,
                checkpoint,
                digest,
            })
        })
        .transpose()
    }

    /// Commits a round: checkpoint file first, then the round row and contributions atomically.
    pub fn commit_round(&mut self, c: &RoundCommit<'_>) -> Result<CommittedRound, StoreError> {
        let file = checkpoint_file(c.round);
        let path = self.dir.join("checkpoints").join(&file);
        let digest = write_checkpoint(&path, c.model, c.strategy_state, c.round, self.durable)?;
        if self.durable {
            self.db.pragma_update(None, "synchronous", "FULL")?;
        }
        let committed = self.insert_round(c, &file, &digest);
        if self.durable {
            self.db.pragma_update(None, "synchronous", "NORMAL")?;
        }
        committed?;
        self.prune_checkpoints(c.round);
        Ok(CommittedRound {
            round: c.round,
            model_version: c.round,
            checkpoint: path,
            digest,
        })
    }

    /// Deletes the checkpoints that [`Store::keep_checkpoints`] no longer keeps, now that
    /// `round` is committed. Runs after the commit, so a crash at any point leaves the newest
    /// checkpoint in place (files a crash left behind go at the next commit); a file that
    /// cannot be deleted is logged, never a reason to fail the round.
    fn prune_checkpoints(&self, round: u64) {
        if self.keep_checkpoints == 0 || round < self.keep_checkpoints {
            return;
        }
        let oldest_kept = round + 1 - self.keep_checkpoints;
        let dir = self.dir.join("checkpoints");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list checkpoints to prune");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(r) = name.to_str().and_then(checkpoint_round) else {
                continue;
            };
            if r < oldest_kept
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot delete old checkpoint");
            }
        }
    }

    fn insert_round(
        &mut self,
        c: &RoundCommit<'_>,
        file: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO rounds(round, model_version, attempt, num_clients, total_weight, checkpoint, digest, committed_at)
             VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, strftime('%s','now'))",
            params![c.round as i64, c.attempt, c.contributions.len() as i64, c.total_weight, file, digest.to_hex()],
        )?;
        {
            let mut ins = tx.prepare(
                "INSERT INTO contributions(round, client_id, task_id, num_examples, weight) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for k in c.contributions {
                ins.execute(params![
                    c.round as i64,
                    k.client_id,
                    k.task_id,
                    k.num_examples as i64,
                    k.weight
                ])?;
            }
        }
        write_pending(&tx, &self.registrations, &self.metrics)?;
        tx.commit()?;
        self.registrations.clear();
        self.metrics.clear();
        Ok(())
    }

    /// Clients whose updates went into `round`, sorted.
    pub fn contributors(&self, round: u64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT client_id FROM contributions WHERE round = ?1 ORDER BY client_id")?;
        let rows = stmt.query_map([round as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The contributions recorded with `round`'s commit, by client id.
    pub fn contributions(&self, round: u64) -> Result<Vec<Contribution>, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT client_id, task_id, num_examples, weight FROM contributions \
             WHERE round = ?1 ORDER BY client_id",
        )?;
        let rows = stmt.query_map([round as i64], |r| {
            Ok(Contribution {
                client_id: r.get(0)?,
                task_id: r.get(1)?,
                num_examples: r.get::<_, i64>(2)? as u64,
                weight: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Committed rounds, oldest first (round 0 is the initial model).
    pub fn rounds(&self) -> Result<Vec<(u64, usize)>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT round, num_clients FROM rounds ORDER BY round")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as usize))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records reported metrics, written at once (a report is acknowledged only once it is in
    /// the database: a server killed right after loses none; ~50 µs a report).
    pub fn insert_metrics(
        &mut self,
        round: u64,
        client_id: &str,
        metrics: &[(String, f64)],
    ) -> Result<(), StoreError> {
        self.metrics.extend(
            metrics
                .iter()
                .map(|(name, value)| (round, client_id.to_string(), name.clone(), *value)),
        );
        self.flush()
    }

    /// Writes the buffered registrations and metric rows in one transaction.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.metrics.is_empty() && self.registrations.is_empty() {
            return Ok(());
        }
        let tx = self.db.transaction()?;
        write_pending(&tx, &self.registrations, &self.metrics)?;
        tx.commit()?;
        self.registrations.clear();
        self.metrics.clear();
        Ok(())
    }

    /// Count and sum of a metric over a round's reports.
    pub fn metric_total(&self, round: u64, name: &str) -> Result<(usize, f64), StoreError> {
        Ok(self.db.query_row(
            "SELECT COUNT(value), COALESCE(SUM(value), 0.0) FROM metrics WHERE round = ?1 AND name = ?2",
            params![round as i64, name],
            |r| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?)),
        )?)
    }

    /// Mean of a client-reported metric over a round's reports.
    pub fn mean_metric(&self, round: u64, name: &str) -> Result<Option<f64>, StoreError> {
        Ok(self.db.query_row(
            "SELECT AVG(value) FROM metrics WHERE round = ?1 AND name = ?2",
            params![round as i64, name],
            |r| r.get(0),
        )?)
    }
}

fn write_pending(
    tx: &rusqlite::Transaction<'_>,
    registrations: &[(String, String)],
    metrics: &[(u64, String, String, f64)],
) -> Result<(), StoreError> {
    let mut ins = tx.prepare_cached(
        "INSERT INTO clients(client_id, capabilities, joined_at) VALUES (?1, ?2, strftime('%s','now'))
         ON CONFLICT(client_id) DO UPDATE SET capabilities = excluded.capabilities",
    )?;
    for (client, capabilities) in registrations {
        ins.execute(params![client, capabilities])?;
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO metrics(round, client_id, name, value, reported_at) VALUES (?1, ?2, ?3, ?4, strftime('%s','now'))
         ON CONFLICT(round, client_id, name) DO UPDATE SET value = excluded.value, reported_at = excluded.reported_at",
    )?;
    for (round, client, name, value) in metrics {
        ins.execute(params![*round as i64, client, name, value])?;
    }
    Ok(())
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "registrations and metrics not written at shutdown");
        }
    }
}

/// The file name of `round`'s checkpoint, in a state directory's `checkpoints/`.
pub fn checkpoint_file(round: u64) -> String {
    format!("round-{round:06}.safetensors")
}

/// The round of a checkpoint file name (`round-NNNNNN.safetensors`), if it is one.
pub fn checkpoint_round(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("round-")?.strip_suffix(".safetensors")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The database with its settings and schema. One server owns its state (the lock file says
/// so); SQLite's own locking stays shared, so other programs can read the database (WAL
/// readers never block the server) while it runs.
fn open_db(path: &Path, durable: bool) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    // Metrics and registrations need no fsync of their own (WAL keeps them consistent, and a
    // process crash loses nothing); round commits switch to FULL. Set before the switch to
    // WAL, whose first write (on a new file) would otherwise fsync three times.
    db.pragma_update(None, "synchronous", if durable { "NORMAL" } else { "OFF" })?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    // A state written before metrics were keyed may hold duplicate rows: keep the last of each.
    let keyed: i64 = db.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'metrics_key'",
        [],
        |r| r.get(0),
    )?;
    let dedupe = if keyed == 0 { DEDUPE_METRICS } else { "" };
    // One transaction for the whole schema: one WAL commit instead of one per table.
    db.execute_batch(&format!("BEGIN;{SCHEMA}{dedupe}{METRICS_KEY}COMMIT;"))?;
    Ok(db)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, capabilities TEXT NOT NULL, joined_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, model_version INTEGER NOT NULL, attempt INTEGER NOT NULL,
    num_clients INTEGER NOT NULL, total_weight REAL NOT NULL,
    checkpoint TEXT NOT NULL, digest TEXT NOT NULL, committed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS contributions (
    round INTEGER NOT NULL REFERENCES rounds(round), client_id TEXT NOT NULL, task_id TEXT NOT NULL,
    num_examples INTEGER NOT NULL, weight REAL NOT NULL, PRIMARY KEY (round, client_id));
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL, client_id TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    reported_at INTEGER NOT NULL);
";

/// One row per (round, client, metric): a round that re-runs after a crash replaces its rows.
const METRICS_KEY: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS metrics_key ON metrics(round, client_id, name);";

const DEDUPE_METRICS: &str = "DELETE FROM metrics WHERE rowid NOT IN
    (SELECT MAX(rowid) FROM metrics GROUP BY round, client_id, name);";

#[cfg(test)]
mod tests;
