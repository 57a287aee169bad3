//! The conformance suite: the ledger's contract ([`LedgerStore`], in
//! `ledger`) and the fleet's ([`FleetStore`], in `fleet`) as tests that
//! every store must pass, written once against the traits.
//!
//! A store's crate instantiates the whole suite with one line, giving a
//! function that makes a fresh, empty store with the default retention (7
//! days) and whatever keeps it alive (a temporary folder, a database
//! schema):
//!
//! ```ignore
//! ledger_core::conformance_suite!(crate::fresh_store);
//! ```
//!
//! Each function below is one test of the suite; the macro makes a `#[test]`
//! of each. File formats, crash safety and multi-process behaviour are
//! tested by each store itself, as they are its own.
//!
//! Needs the `conformance` feature.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::*;

mod fleet;
mod ledger;

pub use fleet::*;
pub use ledger::*;

/// A store under test, and what keeps it alive.
pub struct Subject {
    store: Arc<dyn Store>,
    _keep: Box<dyn Any>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// `store`, kept alive by `keep` (dropped after the store).
    pub fn new(store: Arc<dyn Store>, keep: impl Any) -> Self {
        Self {
            store,
            _keep: Box::new(keep),
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The store, shared (for a [`SlotGuard`], or threads).
    pub fn shared(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

/// The suite's "now": any fixed instant.
pub const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
pub(crate) const MINUTE: Duration = Duration::from_secs(60);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// The key of `task` on `backend`.
pub fn key(backend: &str, task: &str) -> SlotKey {
    SlotKey::new(Backend::new(backend).unwrap(), TaskId::new(task).unwrap())
}

/// An owner: this process, on a made-up host.
pub fn owner() -> Owner {
    Owner {
        host: "test-host".into(),
        boot_id: "boot-1".into(),
        runner: ProcessIdentity {
            pid: std::process::id(),
            start_time: 1,
        },
        executor: None,
        role: None,
        project: None,
        keeper: None,
        outcome: None,
        title: None,
    }
}

/// A request to admit `task` on `backend` as run `run`.
pub fn request(backend: &str, task: &str, run: &str) -> AdmitRequest {
    AdmitRequest {
        key: key(backend, task),
        run_id: RunId::new(run).unwrap(),
        owner: owner(),
        lease: Duration::from_secs(60),
    }
}

/// A backend cap of `max_concurrent` and no other cap.
pub fn limits(max_concurrent: u32) -> Limits {
    Limits {
        global_max_concurrent: None,
        backend: BackendLimits {
            max_concurrent,
            max_per_hour: None,
            max_per_day: None,
        },
    }
}

/// The slot of an admission (panics on a denial).
pub fn admitted(outcome: AdmitOutcome) -> Slot {
    match outcome {
        AdmitOutcome::Admitted(slot) => slot,
        AdmitOutcome::Denied(denial) => panic!("expected an admission, got {denial}"),
    }
}

/// The denial of an admission (panics on an admission).
pub fn denied(outcome: AdmitOutcome) -> Denial {
    match outcome {
        AdmitOutcome::Denied(denial) => denial,
        AdmitOutcome::Admitted(slot) => panic!("expected a denial, got slot {}", slot.key),
    }
}

pub(crate) fn all_events(ledger: &dyn LedgerStore) -> Vec<Event> {
    ledger.events_after(0, usize::MAX).unwrap()
}

/// The sequence numbers of the oldest and newest retained events.
pub(crate) fn event_range(ledger: &dyn LedgerStore) -> Option<(u64, u64)> {
    let events = all_events(ledger);
    Some((events.first()?.seq, events.last()?.seq))
}

/// The contract's invariants, seen through the trait: increasing sequence
/// numbers, and every open slot's start retained and not followed by its
/// finish.
pub(crate) fn assert_sound(ledger: &dyn LedgerStore) {
    let events = all_events(ledger);
    for pair in events.windows(2) {
        assert!(pair[1].seq > pair[0].seq, "the log is out of order");
    }
    for slot in ledger.open_slots().unwrap() {
        let start = events.iter().find(|e| e.seq == slot.started_seq);
        assert!(start.is_some(), "{}: its start was pruned", slot.key);
        assert!(
            !events.iter().any(|e| e.seq > slot.started_seq
                && matches!(&e.kind, EventKind::Finished { key, run_id, .. } if *key == slot.key && *run_id == slot.run_id)),
            "{}: open although finished",
            slot.key
        );
    }
}

pub(crate) fn finish(ledger: &dyn LedgerStore, slot: &Slot, at: Timestamp) {
    let outcome = ledger
        .finish(&slot.key, Some(&slot.run_id), FinishReason::Completed, at)
        .unwrap();
    assert!(matches!(outcome, FinishOutcome::Finished(_)));
}

/// Task `T{i}` (run `r{i}`) on backend `b`, admitted under `caps` at `at`
/// and finished at once: one start in the rate windows, no slot left open.
pub(crate) fn run_through(ledger: &dyn LedgerStore, caps: &Limits, i: usize, at: Timestamp) {
    let request = request("b", &format!("T{i}"), &format!("r{i}"));
    let slot = admitted(ledger.admit(&request, caps, at).unwrap());
    finish(ledger, &slot, at);
}

/// Instantiates the whole conformance suite: one `#[test]` per check, each
/// on a fresh store from `$fresh` (a `fn() -> ledger_core::conformance::Subject`).
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:path) => {
        $crate::conformance_suite!(@tests $fresh; already_in_flight_is_refused_with_its_figures, the_global_cap_counts_every_backend, the_backend_cap_counts_only_that_backend, the_hourly_window_slides, the_daily_window_slides, denials_are_recorded_in_the_audit_log, retention_prunes_old_events_but_never_an_open_slot, events_can_be_read_by_time_range, a_task_s_history_is_read_by_task_newest_last, a_backend_s_starts_are_read_as_its_rate_caps_count_them, a_finish_with_an_old_run_id_leaves_the_newer_run_open, a_second_finish_of_the_same_run_reports_not_in_flight_and_changes_nothing, admitting_an_open_run_again_is_idempotent, lease_and_executor_updates_apply_only_to_the_holding_run, the_guard_finishes_on_drop_and_while_unwinding, a_guard_never_closes_a_newer_run, the_last_finish_of_a_key_is_found, a_runner_renews_every_slot_it_holds_and_only_those, a_keeper_takes_over_its_slot_and_records_the_outcome_for_its_run_only, a_budget_takes_up_to_its_limit_then_waits_for_the_oldest_take, a_pause_holds_every_take_of_its_key_and_is_never_shortened, a_budget_is_read_as_it_stands_without_a_take, takers_racing_on_one_budget_never_exceed_it, requests_plane_counted_from_outside_the_fleet_fill_the_window, one_caller_lists_the_board_and_every_other_is_served_its_snapshot, a_lister_holds_its_claim_while_it_lists_and_gives_it_up_when_it_stops, board_hints_are_read_in_order_per_board_and_dropped_when_old);
    };
    (@tests $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name(&$fresh());
            }
        )*
    };
}
