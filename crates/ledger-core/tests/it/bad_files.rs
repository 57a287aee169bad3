//! A file that is not a sound ledger is reported with its path and never
//! written to.

use std::path::Path;

use ledger_core::*;

use crate::support::*;

/// Opens `path`, expects an error naming it, and checks that the file's bytes
/// did not change.
fn refuse(path: &Path) -> LedgerError {
    let before = file_digest(path);
    let err = Ledger::open(path).expect_err("a bad file was accepted");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "the error does not name the file: {err}"
    );
    assert_eq!(file_digest(path), before, "the file was modified");
    err
}

fn sample_ledger(path: &Path) {
    let ledger = Ledger::open(path).unwrap();
    for i in 0..300 {
        let slot = admitted(
            ledger
                .admit(
                    &request("b", &format!("T{i}"), &format!("r{i}")),
                    &limits(1000),
                    T0,
                )
                .unwrap(),
        );
        if i % 2 == 0 {
            ledger
                .finish(&slot.key, Some(&slot.run_id), FinishReason::Completed, T0)
                .unwrap();
        }
    }
}

#[test]
fn random_bytes_are_not_a_ledger() {
    let (_dir, path) = temp_ledger();
    let mut rng = seeded_rng();
    let bytes: Vec<u8> = (0..64 * 1024).map(|_| rng.u64(..256) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(refuse(&path), LedgerError::NotALedger { .. }));
}

#[test]
fn random_bytes_behind_a_redb_header_are_refused() {
    let (_dir, path) = temp_ledger();
    sample_ledger(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut rng = seeded_rng();
    // Keep the header, scramble everything after it.
    for b in bytes.iter_mut().skip(512) {
        *b = rng.u64(..256) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    // Whatever the engine makes of it, the open ends in an error, not a
    // panic, and the bytes stay as they were.
    refuse(&path);
}

#[test]
fn an_empty_file_is_not_a_ledger() {
    let (_dir, path) = temp_ledger();
    std::fs::write(&path, b"").unwrap();
    match refuse(&path) {
        LedgerError::NotALedger { detail, .. } => assert!(detail.contains("empty"), "{detail}"),
        other => panic!("expected NotALedger, got {other:?}"),
    }
}

#[test]
fn a_text_file_is_not_a_ledger() {
    let (_dir, path) = temp_ledger();
    std::fs::write(&path, br#"{"events": []}"#).unwrap();
    assert!(matches!(refuse(&path), LedgerError::NotALedger { .. }));
}

#[test]
fn a_truncated_ledger_is_refused() {
    let (_dir, path) = temp_ledger();
    sample_ledger(&path);
    let full = std::fs::read(&path).unwrap();
    for keep in [full.len() / 2, 4096, 64, 5] {
        std::fs::write(&path, &full[..keep]).unwrap();
        match refuse(&path) {
            LedgerError::Corrupt { .. } | LedgerError::NotALedger { .. } => {}
            other => panic!("truncated to {keep} bytes: unexpected {other:?}"),
        }
    }
}

#[test]
fn a_ledger_from_a_newer_schema_is_refused() {
    let (_dir, path) = temp_ledger();
    sample_ledger(&path);
    {
        // Stamp the file the way a future release would.
        let mut builder = redb::Builder::new();
        builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        let db = builder.open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("meta");
        txn.open_table(meta)
            .unwrap()
            .insert("schema_version", "99")
            .unwrap();
        txn.commit().unwrap();
    }
    match refuse(&path) {
        LedgerError::NewerSchema {
            found, supported, ..
        } => assert_eq!((found, supported), (99, schema::SCHEMA_VERSION)),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn another_programs_redb_file_is_not_a_ledger() {
    let (_dir, path) = temp_ledger();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let table: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
        txn.open_table(table).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    match refuse(&path) {
        LedgerError::NotALedger { detail, .. } => assert!(detail.contains("inflight"), "{detail}"),
        other => panic!("expected NotALedger, got {other:?}"),
    }
}

#[test]
fn a_folder_is_not_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let err = Ledger::open(dir.path()).unwrap_err();
    assert!(matches!(err, LedgerError::NotALedger { .. }), "{err:?}");
}

/// Files the fuzzer found that made the storage engine panic while opening
/// them: each is refused with a typed error naming it, and left unchanged.
#[test]
fn files_found_by_fuzzing_are_refused_untouched() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut tried = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let sample = entry.unwrap().path();
        let (_tmp, path) = temp_ledger();
        std::fs::copy(&sample, &path).unwrap();
        let before = file_digest(&path);
        match Ledger::open(&path) {
            Err(err) => {
                assert!(
                    err.to_string().contains(&path.display().to_string()),
                    "{err}"
                );
                assert_eq!(
                    file_digest(&path),
                    before,
                    "{}: the file was modified ({err})",
                    sample.display()
                );
            }
            Ok(ledger) => {
                // Opened after all: reading it must still not panic.
                let _ = ledger.open_slots();
                let _ = ledger.verify();
            }
        }
        tried += 1;
    }
    assert!(tried > 0);
}
