//! The ledger's contract, checked on the redb store: the whole conformance
//! suite, each test on a fresh ledger file.

use std::sync::Arc;

use ledger_core::Ledger;
use ledger_core::conformance::Subject;

fn fresh_redb_ledger() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("inflight.redb")).unwrap();
    Subject::new(Arc::new(ledger), dir)
}

ledger_core::conformance_suite!(fresh_redb_ledger);
