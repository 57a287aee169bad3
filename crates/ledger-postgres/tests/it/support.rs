//! One throwaway server for the whole test binary; each test gets a fresh
//! schema of its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use ledger_core::conformance::Subject;
use ledger_postgres::test_server::{TestBouncer, TestServer};
use ledger_postgres::{PgLedger, PgOptions, TimeSource};

pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = TestServer::start().unwrap_or_else(|e| panic!("{e}"));
        server.create_database("inflight").unwrap();
        server
    })
}

/// Options for a schema no other test uses.
pub fn fresh_options() -> PgOptions {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let mut options = PgOptions::new(server().url("inflight"));
    options.schema = format!("t{}_{n}", std::process::id());
    options
}

/// A fresh store on the caller's clock, for the conformance suite (which
/// moves time by hand).
pub fn fresh_store() -> Subject {
    let mut options = fresh_options();
    options.time = TimeSource::Caller;
    let store = PgLedger::open(options).unwrap_or_else(|e| panic!("{e}"));
    Subject::new(Arc::new(store), ())
}

/// A PgBouncer in transaction mode in front of [`server`], with one server
/// connection for every store of the test binary: whatever a store left
/// on it (a session setting, a named prepared statement, a session lock),
/// the next store's transaction meets.
pub fn bouncer() -> &'static TestBouncer {
    static BOUNCER: OnceLock<TestBouncer> = OnceLock::new();
    BOUNCER.get_or_init(|| server().bouncer(1).unwrap_or_else(|e| panic!("{e}")))
}

/// [`fresh_store`], reaching the server through [`bouncer`].
pub fn fresh_store_through_pgbouncer() -> Subject {
    let mut options = fresh_options();
    options.url = bouncer().url("inflight");
    options.time = TimeSource::Caller;
    let store = PgLedger::open(options).unwrap_or_else(|e| panic!("{e}"));
    Subject::new(Arc::new(store), ())
}
