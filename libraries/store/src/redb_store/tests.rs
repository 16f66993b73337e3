use std::collections::BTreeMap;

use adora_core::Descriptor;
use adora_message::{control::DataflowStatus, coordinator_to_cli::ControlReply};
use uuid::Uuid;

use super::*;

fn record(name: &str) -> DataflowRecord {
    let descriptor =
        Descriptor::parse("nodes:\n  - id: a\n    path: ./a\n", "d.yml".as_ref()).expect("valid");
    let mut placement = BTreeMap::new();
    placement.insert("a".into(), "robot".to_owned());
    DataflowRecord::new(
        Uuid::new_v4(),
        name.into(),
        descriptor,
        "/w".into(),
        placement,
    )
}

#[test]
fn records_survive_reopening_and_finished_ones_are_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state/coordinator.redb");
    let running = record("running");
    let mut finished = record("finished");
    let machine = MachineRecord {
        name: "robot".into(),
        machine_id: Some("robot".into()),
        hostname: "h".into(),
        labels: [("gpu".to_owned(), "true".to_owned())].into(),
        last_seen_ms: 42,
    };
    let request = RequestRecord {
        id: Uuid::new_v4(),
        reply: Some(ControlReply::LogsEnd),
        at_ms: now_ms(),
    };
    {
        let store = RedbStore::open(&path).expect("open");
        store.put_dataflow(&running).expect("put");
        store.put_dataflow(&finished).expect("put");
        finished.status = DataflowStatus::Finished;
        store.put_dataflow(&finished).expect("put");
        store.put_machine(&machine).expect("put");
        store.put_request(&request).expect("put");
        store.flush().expect("flush");
        // Finished runs live in the archive table, live ones in the dataflows table.
        let db = store.db.lock().expect("lock");
        let txn = db.as_ref().expect("open").begin_read().expect("read");
        let live = txn.open_table(DATAFLOWS).expect("table");
        assert_eq!(live.len().expect("len"), 1);
        let archive = txn.open_table(ARCHIVE).expect("table");
        assert!(archive
            .get(finished.id.to_string().as_str())
            .expect("get")
            .is_some());
    }
    let store = RedbStore::open(&path).expect("reopen");
    let mut flows = store.dataflows().expect("read");
    flows.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(flows, vec![finished, running]);
    assert_eq!(store.machines().expect("read"), vec![machine]);
    assert_eq!(store.requests().expect("read"), vec![request]);
}

#[test]
fn builds_survive_reopening_until_they_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let build = |age: Duration| BuildRecord {
        id: Uuid::new_v4(),
        artifacts: [(
            "a".into(),
            adora_message::distribute::NodeArtifact::Uploaded {
                build_id: Uuid::new_v4(),
                sha256: "0f".repeat(32),
            },
        )]
        .into(),
        placement: [("a".into(), "robot".to_owned())].into(),
        created_at_ms: now_ms() - age.as_millis() as u64,
    };
    let fresh = build(Duration::ZERO);
    let expired = build(BUILD_RETENTION + Duration::from_secs(60));
    {
        let store = RedbStore::open(&path).expect("open");
        store.put_build(&fresh).expect("put");
        store.put_build(&expired).expect("put");
        store.flush().expect("flush");
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.builds().expect("read"), vec![fresh]);
}

#[test]
fn file_is_0600_in_a_0700_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new/dir/coordinator.redb");
    let _store = RedbStore::open(&path).expect("open");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);
}

#[test]
fn a_second_open_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let _store = RedbStore::open(&path).expect("open");
    let err = RedbStore::open(&path).expect_err("in use");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
}

#[test]
fn another_schema_version_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    {
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = RedbStore::open(&path).expect_err("mismatch");
    let text = err.to_string();
    assert!(matches!(err, StoreError::SchemaMismatch { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{text}"
    );
}

/// Writes a store with some records and returns its bytes.
fn valid_store(path: &Path) -> Vec<u8> {
    {
        let store = RedbStore::open(path).expect("open");
        for i in 0..50 {
            store.put_dataflow(&record(&format!("df{i}"))).expect("put");
        }
        store.flush().expect("flush");
    }
    std::fs::read(path).expect("read")
}

fn assert_refused_untouched(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
    let err = RedbStore::open(path).expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Corrupted { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert_eq!(
        std::fs::read(path).expect("read"),
        bytes,
        "the file was modified"
    );
}

#[test]
fn a_truncated_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let bytes = valid_store(&path);
    assert_refused_untouched(&path, &bytes[..bytes.len() / 2]);
    assert_refused_untouched(&path, &bytes[..100]);
    assert_refused_untouched(&path, &[]);
}

#[test]
fn a_corrupted_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let mut bytes = valid_store(&path);
    // Garbage over the header.
    let mut garbage = bytes.clone();
    garbage[..64].fill(0xAB);
    assert_refused_untouched(&path, &garbage);
    // A flipped byte inside a stored record (caught by redb's page checksums). redb writes pages
    // copy-on-write, so old copies of a record can sit in free pages no checksum covers: flip the
    // byte in every copy, so the live one is corrupted whatever the file's layout.
    let needle = b"\"name\":\"df25\"";
    let copies: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect();
    assert!(!copies.is_empty(), "the record is in the file");
    for at in copies {
        bytes[at + needle.len() - 2] ^= 0x01;
    }
    assert_refused_untouched(&path, &bytes);
    // Not a database at all.
    assert_refused_untouched(&path, b"this is not a database\n");
}

#[test]
fn removed_records_stay_removed_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let (kept, mut gone) = (record("kept"), record("gone"));
    gone.status = DataflowStatus::Failed;
    let request = RequestRecord {
        id: Uuid::new_v4(),
        reply: None,
        at_ms: now_ms(),
    };
    {
        let store = RedbStore::open(&path).expect("open");
        store.put_dataflow(&kept).expect("put");
        store.put_dataflow(&gone).expect("put");
        store.put_request(&request).expect("put");
        store.remove_dataflows(&[gone.id]).expect("remove");
        store.remove_requests(&[request.id]).expect("remove");
        store.flush().expect("flush");
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.dataflows().expect("read"), vec![kept]);
    assert!(store.requests().expect("read").is_empty());
}

#[test]
fn join_codes_and_certificates_survive_reopening_and_removal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let (mut used, gone) = (
        crate::tests::join_code("0a1b2c3d"),
        crate::tests::join_code("ffff0000"),
    );
    let (mut revoked, other) = (crate::tests::cert("aa"), crate::tests::cert("bb"));
    {
        let store = RedbStore::open(&path).expect("open");
        store.put_join_code(&used).expect("put");
        store.put_join_code(&gone).expect("put");
        used.uses = 2;
        store.put_join_code(&used).expect("put");
        store
            .remove_join_codes(std::slice::from_ref(&gone.id))
            .expect("remove");
        store.put_cert(&revoked).expect("put");
        store.put_cert(&other).expect("put");
        revoked.revoked_ms = Some(now_ms());
        store.put_cert(&revoked).expect("put");
        store
            .remove_certs(std::slice::from_ref(&other.fingerprint))
            .expect("remove");
        store.sync().expect("sync");
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.join_codes().expect("read"), vec![used]);
    assert_eq!(store.certs().expect("read"), vec![revoked]);
}

#[test]
fn a_file_from_before_join_codes_opens_with_them_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let running = record("running");
    {
        // The tables of a schema-1 file written before join codes and certificates existed.
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert(SCHEMA_KEY, SCHEMA_VERSION)
            .expect("insert");
        for table in [DATAFLOWS, ARCHIVE, MACHINES, REQUESTS, BUILDS] {
            txn.open_table(table).expect("table");
        }
        let bytes = serde_json::to_vec(&running).expect("encode");
        txn.open_table(DATAFLOWS)
            .expect("table")
            .insert(running.id.to_string().as_str(), bytes.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let store = RedbStore::open(&path).expect("an older file opens");
    assert_eq!(store.dataflows().expect("read"), vec![running]);
    assert!(store.join_codes().expect("read").is_empty());
    assert!(store.certs().expect("read").is_empty());
    store
        .put_join_code(&crate::tests::join_code("0a1b2c3d"))
        .expect("put");
    store.sync().expect("sync");
    assert_eq!(store.join_codes().expect("read").len(), 1);
}

#[test]
fn maintenance_survives_reopening_and_removal() {
    use adora_message::maintenance::{Cordon, LockHolder, UpdateLock};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let mut robot = MachineMaintenance::new("robot");
    robot.cordon = Some(Cordon {
        reason: "battery swap".into(),
        since_ms: 1,
    });
    robot.locks.push(UpdateLock {
        holder: LockHolder::Operator,
        reason: "calibrating".into(),
        since_ms: 2,
    });
    {
        let store = RedbStore::open(&path).expect("open");
        store.put_maintenance(&robot).expect("put");
        store
            .put_maintenance(&MachineMaintenance::new("gone"))
            .expect("put");
        store.remove_maintenance(&["gone".into()]).expect("remove");
        store.sync().expect("sync");
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.maintenance().expect("read"), vec![robot]);
}

#[test]
fn a_store_with_a_record_that_cannot_be_decoded_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    valid_store(&path);
    {
        let db = Database::open(&path).expect("open");
        let txn = db.begin_write().expect("write");
        txn.open_table(MACHINES)
            .expect("machines")
            .insert("robot", b"{not json".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = RedbStore::open(&path).expect_err("a bad record");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Corrupted { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("record `robot` of its machines cannot be read"),
        "{text}"
    );
    // Nothing was pruned or rewritten: every record is still there, the bad one too (redb
    // itself rewrites its header on every open).
    let db = Database::open(&path).expect("open");
    let txn = db.begin_read().expect("read");
    assert_eq!(
        txn.open_table(DATAFLOWS)
            .expect("dataflows")
            .len()
            .expect("len"),
        50
    );
    let machines = txn.open_table(MACHINES).expect("machines");
    let bad = machines.get("robot").expect("get").expect("still there");
    assert_eq!(bad.value(), b"{not json");
}
