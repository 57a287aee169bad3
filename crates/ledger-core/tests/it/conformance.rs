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

/// The same suite on the in-memory store (feature `testing`): the fake
/// other services test against is held to the same contract.
mod memory {
    use std::sync::Arc;

    use ledger_core::MemoryStore;
    use ledger_core::conformance::Subject;

    fn fresh_memory_store() -> Subject {
        Subject::new(Arc::new(MemoryStore::new()), ())
    }

    ledger_core::conformance_suite!(fresh_memory_store);
}
