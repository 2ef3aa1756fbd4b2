//! The buffer's journal: every update a buffered server accepts is appended here and synced
//! to disk before the device is told it was accepted, so a server that dies keeps every
//! update it acknowledged. One file per buffer, named for the model version the buffer
//! will commit; the file goes once that version is committed (the version's commit records
//! its contributions in the same SQLite transaction as the model), so an update is never
//! applied twice either.
//!
//! A record is `[u32 body length][body][XXH3-128 of body]`, the body
//! `[client id][task id][u64 examples][f64 weight][u64 staleness][f32 values...]` with each
//! string as `[u16 length][UTF-8]`, all little-endian. The values are the update widened to
//! the global model's shapes, in manifest order. A torn last record (the server died while
//! writing it, before it acknowledged it) is cut off when the journal is read back.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fedtune_proto::{Bundle, Digest, Tensor, TensorSpec};

use crate::ServerError;
use crate::store::Contribution;

/// One accepted update as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub contribution: Contribution,
    /// Model versions between the one the device trained on and the buffer's base.
    pub staleness: u64,
    /// The update, widened to the global model's shapes.
    pub update: Bundle,
}

/// The journal of the buffer that will commit model version `round`.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Sync every record to disk before it is acknowledged (off for simulations).
    durable: bool,
}

/// `round-00000042.journal`.
fn file_name(round: u64) -> String {
    format!("round-{round:08}.journal")
}

fn io_error(path: &Path, e: std::io::Error) -> ServerError {
    ServerError::Internal(format!("buffer journal {}: {e}", path.display()))
}

impl Journal {
    /// Opens (or creates) the journal of `round` in `dir` and reads back its entries, shaped
    /// like `manifest`. Journals of rounds up to `committed` are deleted: their updates are in
    /// a committed model already.
    pub fn open(
        dir: &Path,
        round: u64,
        committed: u64,
        manifest: &[TensorSpec],
        durable: bool,
    ) -> Result<(Self, Vec<Entry>), ServerError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        remove_committed(dir, committed);
        let path = dir.join(file_name(round));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(&path, e))?;
        let (entries, good) = decode_all(&bytes, manifest);
        if good < bytes.len() {
            tracing::warn!(journal = %path.display(), kept = entries.len(), cut = bytes.len() - good, "torn record at the end of the buffer journal: cut off");
            file.set_len(good as u64).map_err(|e| io_error(&path, e))?;
        }
        Ok((
            Journal {
                path,
                file,
                durable,
            },
            entries,
        ))
    }

    /// Appends `entry`, synced to disk when durable: only then may it be acknowledged.
    pub fn append(&mut self, entry: &Entry) -> Result<(), ServerError> {
        let body = encode(entry);
        let mut w = BufWriter::new(&self.file);
        let len = u32::try_from(body.len())
            .map_err(|_| ServerError::Internal("an update too large for the journal".into()))?;
        w.write_all(&len.to_le_bytes())
            .and_then(|()| w.write_all(&body))
            .and_then(|()| w.write_all(&Digest::of(&body).0))
            .and_then(|()| w.flush())
            .map_err(|e| io_error(&self.path, e))?;
        drop(w);
        if self.durable {
            self.file.sync_data().map_err(|e| io_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Deletes the journal (its round is committed).
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(journal = %self.path.display(), error = %e, "cannot delete a committed buffer journal");
        }
    }
}

/// Deletes the journals of rounds up to `committed`.
fn remove_committed(dir: &Path, committed: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let round = name
            .to_str()
            .and_then(|n| n.strip_prefix("round-"))
            .and_then(|n| n.strip_suffix(".journal"))
            .and_then(|n| n.parse::<u64>().ok());
        if round.is_some_and(|r| r <= committed) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode(e: &Entry) -> Vec<u8> {
    let c = &e.contribution;
    let mut out = Vec::with_capacity(64 + 4 * e.update.numel());
    put_str(&mut out, &c.client_id);
    put_str(&mut out, &c.task_id);
    out.extend_from_slice(&c.num_examples.to_le_bytes());
    out.extend_from_slice(&c.weight.to_le_bytes());
    out.extend_from_slice(&e.staleness.to_le_bytes());
    for t in e.update.tensors() {
        for v in t.to_f32().iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// A cursor over a record's body.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        String::from_utf8(self.take(n as usize)?.to_vec()).ok()
    }
}

fn decode(body: &[u8], manifest: &[TensorSpec]) -> Option<Entry> {
    let mut b = Body(body);
    let client_id = b.string()?;
    let task_id = b.string()?;
    let num_examples = b.u64()?;
    let weight = f64::from_bits(b.u64()?);
    let staleness = b.u64()?;
    let tensors = manifest
        .iter()
        .map(|spec| {
            let n: usize = spec.shape.iter().product();
            let raw = b.take(4 * n)?;
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::from_f32_vec(spec.name.clone(), spec.shape.clone(), values).ok()
        })
        .collect::<Option<Vec<_>>>()?;
    if !b.0.is_empty() {
        return None;
    }
    Some(Entry {
        contribution: Contribution {
            client_id,
            task_id,
            num_examples,
            weight,
        },
        staleness,
        update: Bundle::new(tensors).ok()?,
    })
}

/// The entries of a journal's bytes, and how many bytes of it are whole, checked records.
fn decode_all(bytes: &[u8], manifest: &[TensorSpec]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 4 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let Some(end) = (at + 4).checked_add(len).and_then(|e| e.checked_add(16)) else {
            break;
        };
        if end > bytes.len() {
            break;
        }
        let body = &bytes[at + 4..at + 4 + len];
        if Digest::of(body).0 != bytes[at + 4 + len..end] {
            break;
        }
        let Some(entry) = decode(body, manifest) else {
            break;
        };
        entries.push(entry);
        at = end;
    }
    (entries, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        let values: Vec<f32> = (0..6).map(|k| (k as f32 + i as f32) * 0.5).collect();
        Entry {
            contribution: Contribution {
                client_id: format!("dev-{i}"),
                task_id: format!("task-{i}"),
                num_examples: 10 + i,
                weight: 1.0 / (1.0 + i as f64).sqrt(),
            },
            staleness: i,
            update: Bundle::new(vec![
                Tensor::from_f32("a", vec![2, 2], &values[..4]).unwrap(),
                Tensor::from_f32("b", vec![2], &values[4..]).unwrap(),
            ])
            .unwrap(),
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = entry(0).update.manifest();
        let (mut j, found) = Journal::open(dir.path(), 3, 2, &manifest, true).unwrap();
        assert!(found.is_empty());
        for i in 0..3 {
            j.append(&entry(i)).unwrap();
        }
        drop(j);
        let (j, found) = Journal::open(dir.path(), 3, 2, &manifest, true).unwrap();
        assert_eq!(found, (0..3).map(entry).collect::<Vec<_>>());
        drop(j);
        // The server died halfway through a fourth record: the three whole ones stay.
        let path = dir.path().join(file_name(3));
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode(&entry(3))[..20]).unwrap();
        drop(f);
        let (mut j, found) = Journal::open(dir.path(), 3, 2, &manifest, true).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        // ... and appending goes on after them.
        j.append(&entry(4)).unwrap();
        drop(j);
        let (_, found) = Journal::open(dir.path(), 3, 2, &manifest, true).unwrap();
        assert_eq!(found.last(), Some(&entry(4)));
    }

    #[test]
    fn a_corrupt_record_ends_the_journal_and_committed_rounds_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = entry(0).update.manifest();
        let (mut j, _) = Journal::open(dir.path(), 5, 4, &manifest, false).unwrap();
        j.append(&entry(1)).unwrap();
        j.append(&entry(2)).unwrap();
        drop(j);
        let path = dir.path().join(file_name(5));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 20;
        bytes[last] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Journal::open(dir.path(), 5, 4, &manifest, false).unwrap();
        assert_eq!(found, vec![entry(1)]);
        // Round 5 committed: its journal goes when round 6's opens.
        let (j, found) = Journal::open(dir.path(), 6, 5, &manifest, false).unwrap();
        assert!(found.is_empty());
        assert!(!path.exists());
        j.remove();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
