//! A crash-safe, multi-process **in-flight ledger** for task runners.
//!
//! A runner that hands tasks to executor backends records each dispatch here
//! while it runs. A dispatch holds a *slot*, keyed by `(backend, task id)`,
//! that counts against the backend's `max_concurrent` cap until it is
//! finished. The ledger makes that bookkeeping exact:
//!
//! - [`LedgerStore::admit`] checks every cap and records the start in
//!   **one** durable write transaction, so no two processes can both take
//!   the last slot;
//! - [`LedgerStore::finish`] is conditional on the run id and idempotent, so
//!   a late or repeated finish never closes a newer dispatch;
//! - every decision is an [`Event`] in an append-only, sequenced audit log;
//! - several processes keep one file open at once (redb's multi-writer
//!   mode), and a process killed at any moment leaves the file consistent.
//!
//! Slots whose owner died are found and reclaimed by the orphan rules of the
//! `reconcile` crate; this crate only stores.
//!
//! Two contracts: [`LedgerStore`] (the slots, caps, leases and audit log
//! above) and [`FleetStore`] (what a fleet of runners shares besides: a
//! Plane key's budget, the board's snapshot, webhook hints); [`Store`] is
//! both. The redb [`Ledger`] here and `ledger-postgres`'s `PgLedger`
//! implement both and pass one conformance suite (feature `conformance`).
//!
//! # Features
//!
//! - `store` (default): the redb-backed [`Ledger`], the `usage.json` import
//!   and the [`ReconcileLock`]. Without it the crate is only the ledger's data
//!   types, free of redb, for crates that reason about slots without storing
//!   them.
//! - `testing`: `MemoryStore`, both contracts in memory, held to the same
//!   conformance suite (a faithful fake for other services' tests), which
//!   fails on demand.
//! - `mocks`: mockall mocks of both contracts (`MockLedgerStore`,
//!   `MockFleetStore`).
//! - `process`: the calling process as a slot's holder
//!   (`Owner::current()`: this host's name and boot id, this process's pid
//!   and start time, from Linux's `/proc`), so that a service depending on
//!   this crate alone admits slots that the orphan rules judge correctly.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ledger_core::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("ledger-doc-{}", std::process::id()));
//! let ledger = Ledger::open(dir.join("inflight.redb"))?;
//! let now = Timestamp::from_unix_millis(1_800_000_000_000);
//! let limits = Limits {
//!     global_max_concurrent: None,
//!     backend: BackendLimits { max_concurrent: 1, max_per_hour: Some(60), max_per_day: None },
//! };
//! // The slot's holder: this process on this host (feature `process`),
//! // identified so that a liveness check cannot be fooled by pid reuse.
//! let owner = Owner::current()?;
//! let key = SlotKey::new(Backend::new("local")?, TaskId::new("ROCK-12")?);
//! let request = AdmitRequest {
//!     key: key.clone(),
//!     run_id: RunId::new("run-1")?,
//!     owner: owner.clone(),
//!     lease: Duration::from_secs(60),
//! };
//!
//! // The first dispatch takes the backend's only slot…
//! let AdmitOutcome::Admitted(slot) = ledger.admit(&request, &limits, now)? else {
//!     panic!("the backend was idle");
//! };
//! // …so a second task is refused, with the figures that fired.
//! let other = AdmitRequest {
//!     key: SlotKey::new(Backend::new("local")?, TaskId::new("ROCK-13")?),
//!     run_id: RunId::new("run-2")?,
//!     ..request.clone()
//! };
//! match ledger.admit(&other, &limits, now)? {
//!     AdmitOutcome::Denied(denial) => {
//!         assert_eq!(denial.reason, DenyReason::BackendConcurrencyExceeded);
//!         assert_eq!((denial.current, denial.limit), (1, 1));
//!     }
//!     AdmitOutcome::Admitted(_) => unreachable!("the cap is 1"),
//! }
//!
//! // Finishing is conditional on the run, and idempotent.
//! let done = ledger.finish(&key, Some(&slot.run_id), FinishReason::Completed, now)?;
//! assert!(matches!(done, FinishOutcome::Finished(_)));
//! let again = ledger.finish(&key, Some(&slot.run_id), FinishReason::Completed, now)?;
//! assert_eq!(again, FinishOutcome::NotInFlight);
//! # std::fs::remove_dir_all(dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Sharing one file between processes
//!
//! Every process that opens a ledger must use the same [`SharingMode`]
//! (the default, [`SharingMode::MultiProcess`]), read-mostly tools included.
//! A write transaction is taken with a bounded wait
//! ([`LedgerOptions::write_deadline`]), never indefinitely, and no I/O
//! besides the file itself happens inside one.

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

pub mod blocking;
#[cfg(feature = "conformance")]
pub mod conformance;
mod contract;
mod error;
mod forward;
mod guard;
pub mod ids;
#[cfg(feature = "store")]
pub mod import;
#[cfg(feature = "store")]
mod lock;
#[cfg(feature = "testing")]
mod memory;
mod model;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "store")]
pub mod schema;
#[cfg(feature = "store")]
mod store;
pub mod time;
#[cfg(feature = "usage-json")]
pub mod usage;

pub use contract::{
    AdmissionCounts, BoardHints, BoardLook, BoardSnapshot, BoardStep, BoardVerdict, BudgetAnswer,
    BudgetState, FleetStore, HINT_RETENTION, ImportReport, LedgerStore, PruneReport, Store,
    StoreLock, admission, board_rule, board_step, budget, budget_counted, budget_shortfall,
    listing_hold, next_start_allowed,
};
#[cfg(feature = "mocks")]
pub use contract::{MockFleetStore, MockLedgerStore};
pub use error::{LedgerError, Result, StorageSource};
pub use guard::SlotGuard;
pub use ids::{Backend, IdError, RunId, TaskId};
#[cfg(feature = "store")]
pub use lock::ReconcileLock;
#[cfg(feature = "testing")]
pub use memory::MemoryStore;
pub use model::*;
#[cfg(feature = "store")]
pub use store::{IntegrityReport, Ledger, LedgerOptions, SharingMode, panic_is_contained};
pub use time::{Clock, ManualClock, SystemClock, Timestamp, TimestampError};
