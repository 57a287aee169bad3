//! The inflight ledger on PostgreSQL: one set of caps for runners on
//! several hosts, on the database Plane already runs on.
//!
//! [`PgLedger`] implements [`ledger_core::LedgerStore`] and passes its whole
//! conformance suite. Its promises beyond the contract:
//!
//! - **Capacity is counted from the open slot rows**: a trigger on them
//!   keeps each backend's count in cap rows (the slots opened in the
//!   backend's, those closed in one of their own), in the transaction
//!   that opens or closes the slot, whoever writes it. An admission is one
//!   call, one round trip and one transaction (the server function
//!   `admit_one`): when another admission holds the cap rows, a denial by
//!   a full concurrency cap is decided on a look without locks (counts
//!   read earlier are only ever higher, by slots closed since); otherwise
//!   it locks the cap rows it checks in a fixed order (the global row when
//!   there is a global cap, then the backend's), reads the counts and the
//!   recent starts, applies the cap rule and records the start or the
//!   denial. The rule is [`ledger_core::admission`], mirrored in SQL and
//!   tested against it over random cases. A finish is one call too
//!   (`finish_one`). A unique key allows one open slot per backend and
//!   task.
//! - **Time is the database's.** With [`TimeSource::Database`] (the
//!   default) every stored and compared time is `now()` of the statement's
//!   transaction, whatever the caller's clock says, so a host whose clock
//!   is wrong can neither expire another host's lease nor keep its own
//!   alive. (The conformance suite, which moves time by hand, uses
//!   [`TimeSource::Caller`].)
//! - **The audit log has a total order and loses nothing.** Sequence
//!   numbers increase in the order transactions began writing (gaps are
//!   left by transactions that rolled back), and [`events_after`] returns
//!   only events no transaction still in progress can precede, so a reader
//!   following the log never misses one.
//! - **No session state.** Nothing depends on staying on one server
//!   connection between transactions (statements name their schema and
//!   are sent unnamed with their types; functions carry their own
//!   settings; the start-up lock is a lease row), so it runs behind
//!   PgBouncer in transaction mode as it runs directly.
//!
//! Every call runs on a connection thread of the store's own (the blocking
//! client must not run on an async runtime's thread, and the caller may be
//! one); a lost connection is re-established on the next call.
//!
//! # Example
//!
//! ```no_run
//! use ledger_core::LedgerStore;
//! use ledger_postgres::{PgLedger, PgOptions};
//!
//! # fn main() -> Result<(), ledger_core::LedgerError> {
//! let mut options = PgOptions::new("postgresql://inflight@db.example:5432/inflight");
//! options.password = std::env::var("INFLIGHT_DB_PASSWORD").ok();
//! let ledger = PgLedger::open(options)?;
//! println!("{} slots open", ledger.open_slots()?.len());
//! # Ok(())
//! # }
//! ```
//!
//! [`events_after`]: ledger_core::LedgerStore::events_after

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

mod fleet;
mod import;
mod schema;
mod sql;
mod store;
#[cfg(feature = "test-server")]
pub mod test_server;
mod worker;

use std::time::Duration;

pub use schema::valid_schema;
pub use store::{PgLedger, check_url};

/// Where a store's times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeSource {
    /// The database's `now()`: the only clock every host shares. Callers'
    /// timestamps are ignored, and a lease is measured from the database's
    /// "now".
    #[default]
    Database,
    /// The timestamps callers pass, as the redb store does. For tests that
    /// move time by hand.
    Caller,
}

/// How to reach the database, and the store's settings.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgresql://user@host:port/database`, without a password
    /// (`?sslmode=require` for TLS, verified against the system's roots).
    pub url: String,
    /// The password, from the environment; never in the URL, the
    /// configuration file, `Debug` output or a log.
    pub password: Option<String>,
    /// The schema holding the ledger's tables (created if missing).
    pub schema: String,
    /// How long events are kept (open slots are never pruned).
    pub retention: Duration,
    /// Where times come from.
    pub time: TimeSource,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
}

impl PgOptions {
    /// The defaults for `url`: schema `inflight`, 7 days' retention, the
    /// database's clock, a 10 s connect timeout, no password.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            schema: "inflight".into(),
            retention: Duration::from_secs(7 * 86_400),
            time: TimeSource::Database,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("schema", &self.schema)
            .field("retention", &self.retention)
            .field("time", &self.time)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}
