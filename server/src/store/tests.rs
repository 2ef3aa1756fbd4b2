//! Tests of the server's durable state: registrations, metrics, commits, checkpoints kept.

use super::*;

#[test]
fn one_server_per_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), false).unwrap();
    let e = Store::open(dir.path(), false).unwrap_err();
    assert!(matches!(e, StoreError::InUse(_)), "{e}");
    assert!(e.to_string().contains("in use by another server"), "{e}");
    drop(first);
    let again = Store::open(dir.path(), false).unwrap();
    assert!(again.last_committed().unwrap().is_none());
}

/// Another program's read-only connection to the database in `dir`.
fn reader(dir: &Path) -> Connection {
    Connection::open_with_flags(
        dir.join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the database opens read-only")
}

/// While a server owns its state, another program can read the database.
#[test]
fn the_database_can_be_read_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), true).unwrap();
    store.upsert_client("phone", "{}");
    store.flush().unwrap();
    let reader = reader(dir.path());
    let n: i64 = reader
        .query_row("SELECT COUNT(*) FROM clients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    store.upsert_client("laptop", "{}");
    store.flush().unwrap();
}

#[test]
fn registrations_are_written_at_flush_and_at_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), false).unwrap();
    store.upsert_client("b", "{}");
    store.upsert_client("a", "{}");
    assert!(store.clients().unwrap().is_empty(), "buffered");
    store.flush().unwrap();
    assert_eq!(store.clients().unwrap(), ["a", "b"]);
    store.upsert_client("c", "{}");
    store.upsert_client("a", "{\"threads\":2}");
    drop(store);
    let store = Store::open(dir.path(), false).unwrap();
    assert_eq!(
        store.clients().unwrap(),
        ["a", "b", "c"],
        "one row per client"
    );
}

/// A report is in the database when `insert_metrics` returns: a server killed right after
/// its acknowledgement loses nothing (another program reading the file sees it).
#[test]
fn metrics_are_written_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), false).unwrap();
    let reader = reader(dir.path());
    for c in 0..3 {
        let rows = [("loss".to_string(), 0.5)];
        store.insert_metrics(1, &format!("c{c}"), &rows).unwrap();
        let n: i64 = reader
            .query_row("SELECT COUNT(*) FROM metrics", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, c + 1);
    }
    assert_eq!(store.metric_total(1, "loss").unwrap(), (3, 1.5));
}

/// A round that re-runs after a crash reports its metrics again: they replace the first
/// report (one row per round, client and name), also across a restart.
#[test]
fn a_rerun_round_replaces_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), false).unwrap();
    store
        .insert_metrics(4, "a", &[("loss".into(), 2.0)])
        .unwrap();
    store
        .insert_metrics(4, "b", &[("loss".into(), 1.0)])
        .unwrap();
    drop(store);
    let mut store = Store::open(dir.path(), false).unwrap();
    store
        .insert_metrics(4, "a", &[("loss".into(), 3.0)])
        .unwrap();
    store
        .insert_metrics(4, "a", &[("loss".into(), 1.5)])
        .unwrap();
    store.flush().unwrap();
    assert_eq!(store.metric_total(4, "loss").unwrap(), (2, 2.5));
}

/// A state written before metrics were keyed keeps only the last of its duplicate rows.
#[test]
fn duplicate_metric_rows_of_an_old_state_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Connection::open(dir.path().join(DB_FILE)).unwrap();
        db.execute_batch(SCHEMA).unwrap();
        for v in [1.0, 2.0, 4.0] {
            db.execute(
                "INSERT INTO metrics VALUES (1, 'a', 'loss', ?1, 0)",
                params![v],
            )
            .unwrap();
        }
    }
    let store = Store::open(dir.path(), false).unwrap();
    assert_eq!(store.metric_total(1, "loss").unwrap(), (1, 4.0));
}

/// With `keep_checkpoints(2)`, each commit leaves the two newest checkpoint files, the
/// newest still loads, every round's row stays, and other files are left alone.
#[test]
fn keeps_only_the_newest_checkpoints() {
    use fedtune_proto::Tensor;
    let dir = tempfile::tempdir().unwrap();
    let ckpts = dir.path().join("checkpoints");
    let mut store = Store::open(dir.path(), false).unwrap();
    store.keep_checkpoints(2);
    std::fs::write(ckpts.join("notes.txt"), "mine").unwrap();
    std::fs::write(ckpts.join("round-x.safetensors"), "mine").unwrap();
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&ckpts)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| checkpoint_round(n).is_some())
            .collect();
        names.sort();
        names
    };
    for round in 0..5u64 {
        let model = Bundle::new(vec![
            Tensor::from_f32("w", vec![2], &[round as f32, 1.0]).unwrap(),
        ])
        .unwrap();
        store
            .commit_round(&RoundCommit {
                round,
                attempt: 0,
                model: &model,
                strategy_state: None,
                contributions: &[],
                total_weight: 0.0,
            })
            .unwrap();
        let first = round.saturating_sub(1);
        let expected: Vec<String> = (first..=round).map(checkpoint_file).collect();
        assert_eq!(files(), expected, "after round {round}");
    }
    drop(store);
    let store = Store::open(dir.path(), false).unwrap();
    let last = store.last_committed().unwrap().unwrap();
    let (model, _) = read_checkpoint(&last.checkpoint, Some(last.digest)).unwrap();
    assert_eq!(model.tensors()[0].to_f32().as_ref(), &[4.0, 1.0]);
    assert_eq!(store.rounds().unwrap().len(), 5, "every round's row stays");
    assert!(ckpts.join("notes.txt").exists() && ckpts.join("round-x.safetensors").exists());
}

#[test]
fn checkpoint_names_round_trip() {
    assert_eq!(checkpoint_round(&checkpoint_file(42)), Some(42));
    assert_eq!(
        checkpoint_round(&checkpoint_file(12_345_678)),
        Some(12_345_678)
    );
    for name in [
        "round-.safetensors",
        "round-1.tmp",
        "round-+1.safetensors",
        "x",
    ] {
        assert_eq!(checkpoint_round(name), None, "{name}");
    }
}
