//! inflight's **orphan rules**: which in-flight slots to reclaim.
//!
//! A runner that dies between admitting a dispatch and finishing it leaves
//! its slot open. This crate decides which open slots are orphans, under
//! three rules checked in order (the first match wins):
//!
//! | rule | a slot is reclaimed when |
//! |---|---|
//! | [`DEAD_OWNER_CLEAR`](Rule::DeadOwnerClear) | its owner ran on this host and neither its runner nor its executor is alive |
//! | [`ORPHANED_IN_FLIGHT_CLEAR`](Rule::OrphanedInFlightClear) | its Plane task is not found or terminal |
//! | [`STALE_IN_FLIGHT_EXPIRE`](Rule::StaleInFlightExpire) | it is older than the window and its owner is not known alive |
//!
//! and never reclaims a slot whose owner is alive, never on a failed lookup,
//! and never on a "not found" unless the project itself answers.
//!
//! The decision ([`decide`]) is a pure function over data. The ledger, Plane
//! and the process table sit behind the traits [`InFlightLedger`],
//! [`TaskLookup`] and [`ProcessProbe`]; [`scan`] gathers through them, decides
//! and applies, and [`reconcile_on_startup`] is the guarded sweep a runner
//! does before its first claim. The crate does no I/O and needs no async
//! runtime of its own. With the `mocks` feature it exports mockall mocks of
//! every trait.
//!
//! # Example
//!
//! A dry-run scan over one slot whose runner died on this host:
//!
//! ```
//! use std::time::Duration;
//! use ledger_core::*;
//! use reconcile::*;
//!
//! struct OneSlot(Slot);
//! impl InFlightLedger for OneSlot {
//!     fn open_slots(&self) -> Result<Vec<Slot>, EdgeError> { Ok(vec![self.0.clone()]) }
//!     fn finish_if_run(&self, _: &SlotKey, _: &RunId, _: FinishReason, _: Timestamp)
//!         -> Result<FinishOutcome, EdgeError> { unreachable!("a dry run changes nothing") }
//! }
//! struct Everyone(Liveness);
//! impl ProcessProbe for Everyone {
//!     fn liveness(&self, _: &Owner) -> Liveness { self.0.clone() }
//!     fn terminate_group(&self, _: &ExecutorIdentity) -> Result<TerminateOutcome, EdgeError> {
//!         Ok(TerminateOutcome::NothingLeft)
//!     }
//! }
//! struct NoPlane;
//! impl TaskLookup for NoPlane {
//!     fn probe_project(&self) -> BoxFuture<Result<ProjectSummary, LookupError>> { unreachable!() }
//!     fn task_status(&self, _: TaskId) -> BoxFuture<Result<TaskStatus, LookupError>> { unreachable!() }
//!     fn list_project(&self) -> BoxFuture<Result<Vec<(TaskId, TaskState)>, LookupError>> { unreachable!() }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Timestamp::from_unix_millis(1_800_000_000_000);
//! let slot = Slot {
//!     key: SlotKey::new(Backend::new("local")?, TaskId::new("ROCK-12")?),
//!     run_id: RunId::new("run-1")?,
//!     started_at: now.saturating_sub(Duration::from_secs(60)),
//!     owner: Owner::imported(),
//!     lease_until: now,
//!     started_seq: 1,
//! };
//! let dead = Everyone(Liveness::Dead { why: "runner pid 4242 is gone".into() });
//! let report = block_on(scan(&OneSlot(slot), &NoPlane, &dead, &ScanOptions::default(), now))?;
//!
//! // The dead owner settles it without a single Plane request.
//! assert_eq!(report.plane_requests, 0);
//! assert_eq!(report.actions[0].rule, Rule::DeadOwnerClear);
//! assert_eq!(report.actions[0].action, Action::WouldApply);
//! # Ok(())
//! # }
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

mod decide;
mod edges;
mod join;
mod report;
mod scan;
mod startup;

pub use decide::{
    Observations, Plan, ProjectEvidence, Reclaim, decide, foreign_project, needs_lookup,
};
pub use edges::*;
pub use report::{Action, ActionEntry, ForeignSlot, ProjectCheck, Rule, ScanOptions, ScanReport};
pub use scan::{ScanError, scan};
pub use startup::{StartupOptions, StartupOutcome, StartupReport, reconcile_on_startup};
