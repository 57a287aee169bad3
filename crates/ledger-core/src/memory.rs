//! [`MemoryStore`]: both contracts kept in memory, for tests of code that
//! uses a store (behind the `testing` feature). It passes the conformance
//! suite, so it behaves as the redb and PostgreSQL stores do: caps checked
//! and starts recorded in one step, conditional finishes, an ordered audit
//! log, retention that keeps open slots, budgets, board snapshots and
//! hints. It is shared only within one process and lost with it.
//!
//! Tests of how callers meet a failing store can make it fail on demand
//! ([`MemoryStore::fail_when`]) or lose the answer of a call that landed
//! ([`MemoryStore::lose_answer_of`]); [`MemoryStore::calls`] lists every
//! call made, in order.
//!
//! ```
//! use std::time::Duration;
//! use ledger_core::*;
//!
//! let store = MemoryStore::new();
//! let now = Timestamp::from_unix_millis(1_800_000_000_000);
//! let key = SlotKey::new(Backend::new("local")?, TaskId::new("t1")?);
//! let request = AdmitRequest {
//!     key: key.clone(),
//!     run_id: RunId::new("run-1")?,
//!     owner: Owner {
//!         host: "h".into(),
//!         boot_id: "b".into(),
//!         runner: ProcessIdentity { pid: 1, start_time: 1 },
//!         executor: None,
//!         role: None,
//!         project: None,
//!         keeper: None,
//!         outcome: None,
//!         title: None,
//!     },
//!     lease: Duration::from_secs(60),
//! };
//! let limits = Limits {
//!     global_max_concurrent: None,
//!     backend: BackendLimits { max_concurrent: 1, max_per_hour: None, max_per_day: None },
//! };
//! assert!(matches!(store.admit(&request, &limits, now)?, AdmitOutcome::Admitted(_)));
//!
//! // From now on a finish fails, as against a database that went away.
//! store.fail_when(|call| call == "finish");
//! assert!(store.finish(&key, None, FinishReason::Completed, now).is_err());
//! assert_eq!(store.open_slots()?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::{
    AdmissionCounts, AdmitOutcome, AdmitRequest, BoardHints, BoardLook, BoardSnapshot, BoardStep,
    BudgetAnswer, Event, EventKind, ExecutorIdentity, FinishOutcome, FinishReason, FleetStore,
    HINT_RETENTION, ImportReport, LedgerError, LedgerStore, Limits, Owner, PruneReport, RateWindow,
    Result, RunId, Slot, SlotKey, StoreLock, TaskAttempts, TaskId, Timestamp, UpdateOutcome,
    admission, board_step, budget, listing_hold,
};

/// Decides whether a call (named as the contract's method) fails.
type FailWhen = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Both store contracts in memory. Clones share one store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    faults: Arc<Mutex<Faults>>,
}

#[derive(Default)]
struct Faults {
    fail_when: Option<FailWhen>,
    lose_answer_of: Vec<String>,
    calls: Vec<String>,
}

#[derive(Default)]
struct State {
    open: BTreeMap<(String, String), Slot>,
    events: BTreeMap<u64, Event>,
    /// The number of the newest event ever (numbers never restart).
    last_seq: u64,
    /// Finishes per task (the running dispatches are the open slots).
    attempts: HashMap<TaskId, TaskAttempts>,
    retention: Duration,
    startup_locked: Arc<Mutex<bool>>,
    budgets: HashMap<String, Budget>,
    boards: HashMap<String, Board>,
}

#[derive(Default)]
struct Budget {
    paused_until: Option<Timestamp>,
    takes: Vec<Timestamp>,
}

#[derive(Default)]
struct Board {
    listed_at: Option<Timestamp>,
    events_seen: u64,
    listing_until: Option<Timestamp>,
    body: Vec<u8>,
    last_hint: u64,
    hints: BTreeMap<u64, (Timestamp, Vec<u8>)>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store keeping events for seven days, the stores' default.
    pub fn new() -> Self {
        Self::with_retention(Duration::from_secs(7 * 24 * 3600))
    }

    /// An empty store keeping events for `retention` (at least a day: the
    /// daily rate window counts starts that far back).
    pub fn with_retention(retention: Duration) -> Self {
        let store = Self::default();
        store.state().retention = retention.max(RateWindow::Daily.length());
        store
    }

    /// From now on, a call whose name (`"admit"`, `"renew_leases"`, …)
    /// `fail` accepts fails, as it does when a database cannot be reached,
    /// and changes nothing. Replaces the previous rule.
    pub fn fail_when(&self, fail: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.faults().fail_when = Some(Box::new(fail));
    }

    /// No call fails any more.
    pub fn fail_none(&self) {
        self.faults().fail_when = None;
    }

    /// The next call named `call` takes effect, but its caller gets an error
    /// (the connection died before the answer came back).
    pub fn lose_answer_of(&self, call: &str) {
        self.faults().lose_answer_of.push(call.to_owned());
    }

    /// Every call made so far, by name, in order.
    pub fn calls(&self) -> Vec<String> {
        self.faults().calls.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `call` named `name` on the state, with the faults applied.
    fn call<T>(&self, name: &str, call: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        crate::blocking::entering("a memory store call");
        let lose = {
            let mut faults = self.faults();
            faults.calls.push(name.to_owned());
            if faults.fail_when.as_ref().is_some_and(|fail| fail(name)) {
                return Err(unreachable_store(name, "cut off by the test"));
            }
            match faults.lose_answer_of.iter().position(|c| c == name) {
                Some(i) => {
                    faults.lose_answer_of.remove(i);
                    true
                }
                None => false,
            }
        };
        let answer = call(&mut self.state())?;
        if lose {
            return Err(unreachable_store(
                name,
                "connection closed before the answer (the change landed)",
            ));
        }
        Ok(answer)
    }
}

fn unreachable_store(call: &str, why: &str) -> LedgerError {
    LedgerError::Database {
        location: "memory".into(),
        source: format!("{call}: {why}").into(),
    }
}

fn tuple(key: &SlotKey) -> (String, String) {
    (key.backend.to_string(), key.task_id.to_string())
}

impl State {
    fn append(&mut self, at: Timestamp, kind: EventKind) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        self.events.insert(seq, Event { seq, at, kind });
        seq
    }

    fn starts_within(&self, backend: &str, window: RateWindow, now: Timestamp) -> u64 {
        let since = now.saturating_sub(window.length());
        let started = |e: &&Event| matches!(&e.kind, EventKind::Started { key, .. } if key.backend.as_str() == backend);
        self.events
            .values()
            .filter(started)
            .filter(|e| e.at > since)
            .count() as u64
    }

    fn update_slot(
        &mut self,
        key: &SlotKey,
        run: &RunId,
        change: impl FnOnce(&mut Slot),
    ) -> UpdateOutcome {
        match self.open.get_mut(&tuple(key)) {
            Some(slot) if slot.run_id == *run => {
                change(slot);
                UpdateOutcome::Updated
            }
            _ => UpdateOutcome::NotInFlight,
        }
    }
}

impl LedgerStore for MemoryStore {
    fn location(&self) -> String {
        "memory".into()
    }

    fn admit(
        &self,
        request: &AdmitRequest,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<AdmitOutcome> {
        self.call("admit", |state| {
            let key = &request.key;
            let existing = state.open.get(&tuple(key));
            if let Some(slot) = existing.filter(|s| s.run_id == request.run_id) {
                return Ok(AdmitOutcome::Admitted(slot.clone()));
            }
            let backend = key.backend.as_str();
            let counts = AdmissionCounts {
                key_in_flight: existing.is_some(),
                open_total: state.open.len() as u64,
                open_backend: state.open.keys().filter(|(b, _)| b == backend).count() as u64,
                starts_last_hour: limits
                    .backend
                    .max_per_hour
                    .map(|_| state.starts_within(backend, RateWindow::Hourly, now)),
                starts_last_day: limits
                    .backend
                    .max_per_day
                    .map(|_| state.starts_within(backend, RateWindow::Daily, now)),
            };
            if let Some(denial) = admission(&counts, limits) {
                state.append(
                    now,
                    EventKind::Denied {
                        key: key.clone(),
                        run_id: request.run_id.clone(),
                        denial,
                    },
                );
                return Ok(AdmitOutcome::Denied(denial));
            }
            let seq = state.append(
                now,
                EventKind::Started {
                    key: key.clone(),
                    run_id: request.run_id.clone(),
                    owner: request.owner.clone(),
                },
            );
            let slot = Slot {
                key: key.clone(),
                run_id: request.run_id.clone(),
                started_at: now,
                owner: request.owner.clone(),
                lease_until: now.saturating_add(request.lease),
                started_seq: seq,
            };
            state.open.insert(tuple(key), slot.clone());
            Ok(AdmitOutcome::Admitted(slot))
        })
    }

    fn finish(
        &self,
        key: &SlotKey,
        expected_run: Option<&RunId>,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome> {
        self.call("finish", |state| {
            let Some(slot) = state.open.get(&tuple(key)) else {
                return Ok(FinishOutcome::NotInFlight);
            };
            if let Some(run) = expected_run
                && *run != slot.run_id
            {
                return Ok(FinishOutcome::OtherRunInFlight {
                    open_run: slot.run_id.clone(),
                });
            }
            let Some(slot) = state.open.remove(&tuple(key)) else {
                return Ok(FinishOutcome::NotInFlight);
            };
            state.append(
                now,
                EventKind::Finished {
                    key: key.clone(),
                    run_id: slot.run_id.clone(),
                    started_at: slot.started_at,
                    reason: reason.clone(),
                    role: slot.owner.role.clone(),
                },
            );
            state
                .attempts
                .entry(key.task_id.clone())
                .or_default()
                .record_finish(&reason);
            Ok(FinishOutcome::Finished(slot))
        })
    }

    fn renew_lease(
        &self,
        key: &SlotKey,
        run: &RunId,
        lease: Duration,
        now: Timestamp,
    ) -> Result<UpdateOutcome> {
        let until = now.saturating_add(lease);
        self.call("renew_lease", |state| {
            Ok(state.update_slot(key, run, |slot| {
                slot.lease_until = slot.lease_until.max(until)
            }))
        })
    }

    fn renew_leases(
        &self,
        runner: &Owner,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<(SlotKey, RunId)>> {
        let until = now.saturating_add(lease);
        self.call("renew_leases", |state| {
            let mut renewed = Vec::new();
            for slot in state.open.values_mut() {
                if slot.owner.same_process(runner) {
                    slot.lease_until = slot.lease_until.max(until);
                    renewed.push((slot.key.clone(), slot.run_id.clone()));
                }
            }
            Ok(renewed)
        })
    }

    fn set_executor(
        &self,
        key: &SlotKey,
        run: &RunId,
        executor: ExecutorIdentity,
    ) -> Result<UpdateOutcome> {
        self.call("set_executor", |state| {
            Ok(state.update_slot(key, run, |slot| slot.owner.executor = Some(executor)))
        })
    }

    fn set_holder(&self, key: &SlotKey, run: &RunId, holder: &Owner) -> Result<UpdateOutcome> {
        self.call("set_holder", |state| {
            Ok(state.update_slot(key, run, |slot| slot.owner = holder.clone()))
        })
    }

    fn open_slots(&self) -> Result<Vec<Slot>> {
        self.call("open_slots", |state| {
            Ok(state.open.values().cloned().collect())
        })
    }

    fn slot(&self, key: &SlotKey) -> Result<Option<Slot>> {
        self.call("slot", |state| Ok(state.open.get(&tuple(key)).cloned()))
    }

    fn last_finish(&self, key: &SlotKey) -> Result<Option<Event>> {
        self.call("last_finish", |state| {
            Ok(state
                .events
                .values()
                .rev()
                .find(|e| matches!(&e.kind, EventKind::Finished { key: k, .. } if k == key))
                .cloned())
        })
    }

    fn attempts(&self, task: &TaskId) -> Result<TaskAttempts> {
        self.call("attempts", |state| {
            let mut attempts = state.attempts.get(task).cloned().unwrap_or_default();
            let running = state
                .open
                .keys()
                .filter(|(_, t)| t == task.as_str())
                .count() as u64;
            attempts.started = attempts.finished() + running;
            Ok(attempts)
        })
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.call("events_after", |state| {
            Ok(state
                .events
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(_, e)| e.clone())
                .collect())
        })
    }

    fn events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Event>> {
        self.call("events_between", |state| {
            let mut out: Vec<Event> = state
                .events
                .values()
                .filter(|e| e.at >= from && e.at < to)
                .cloned()
                .collect();
            out.sort_by_key(|e| (e.at, e.seq));
            Ok(out)
        })
    }

    fn prune(&self, now: Timestamp) -> Result<PruneReport> {
        self.call("prune", |state| {
            let cutoff = now.saturating_sub(state.retention);
            let oldest_open = state.open.values().map(|s| s.started_seq).min();
            let stop = oldest_open.unwrap_or(u64::MAX).min(state.last_seq);
            let doomed: Vec<u64> = state
                .events
                .range(..stop)
                .take_while(|(_, e)| e.at < cutoff)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in &doomed {
                state.events.remove(seq);
            }
            Ok(PruneReport {
                events_removed: doomed.len() as u64,
            })
        })
    }

    /// The in-memory store has no file to import into; the redb and
    /// PostgreSQL stores import `usage.json`.
    fn import_usage_json(&self, path: &Path) -> Result<ImportReport> {
        Err(LedgerError::Database {
            location: "memory".into(),
            source: format!(
                "{}: the in-memory store does not import usage.json",
                path.display()
            )
            .into(),
        })
    }

    /// One holder at a time within the process; dropping the token frees it.
    fn startup_lock(&self, timeout: Duration) -> Result<Option<StoreLock>> {
        let lock = self.call("startup_lock", |state| Ok(state.startup_locked.clone()))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
                if !*held {
                    *held = true;
                    return Ok(Some(StoreLock::new(Release(lock.clone()))));
                }
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Frees the start-up lock when dropped.
struct Release(Arc<Mutex<bool>>);

impl Drop for Release {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

impl FleetStore for MemoryStore {
    fn take_budget(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetAnswer> {
        self.call("take_budget", |state| {
            let record = state.budgets.entry(key.to_owned()).or_default();
            let start = now.saturating_sub(window);
            record.takes.retain(|t| *t > start);
            let answer = budget(&record.takes, record.paused_until, limit, window, now);
            if matches!(answer, BudgetAnswer::Taken { .. }) {
                record.takes.push(now);
            }
            Ok(answer)
        })
    }

    fn note_budget_used(
        &self,
        key: &str,
        used: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<u32> {
        self.call("note_budget_used", |state| {
            let record = state.budgets.entry(key.to_owned()).or_default();
            let start = now.saturating_sub(window);
            record.takes.retain(|t| *t > start);
            let missing = crate::budget_shortfall(record.takes.len(), used);
            record
                .takes
                .extend(std::iter::repeat_n(now, missing as usize));
            Ok(missing)
        })
    }

    fn budget_state(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<crate::BudgetState> {
        self.call("budget_state", |state| {
            Ok(match state.budgets.get(key) {
                Some(record) => crate::BudgetState::of(
                    record.takes.iter().copied(),
                    record.paused_until,
                    window,
                    now,
                ),
                None => crate::BudgetState::default(),
            })
        })
    }

    fn pause_budget(&self, key: &str, wait: Duration, now: Timestamp) -> Result<()> {
        let until = now.saturating_add(wait);
        self.call("pause_budget", |state| {
            let record = state.budgets.entry(key.to_owned()).or_default();
            record.paused_until = Some(record.paused_until.map_or(until, |u| u.max(until)));
            Ok(())
        })
    }

    fn board_look(
        &self,
        key: &str,
        max_age: Duration,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<BoardLook> {
        self.call("board_look", |state| {
            let events_seen = state.last_seq;
            let board = state.boards.entry(key.to_owned()).or_default();
            let previous = board.listed_at.map(|listed_at| BoardSnapshot {
                listed_at,
                events_seen: board.events_seen,
                body: board.body.clone(),
            });
            Ok(
                match board_step(previous, board.listing_until, max_age, listing_for, now) {
                    BoardStep::Answer(look) => look,
                    BoardStep::Claim { until, previous } => {
                        board.listing_until = Some(until);
                        BoardLook::YoursToList {
                            listed_at: now,
                            events_seen,
                            until,
                            previous,
                        }
                    }
                },
            )
        })
    }

    fn hold_listing(
        &self,
        key: &str,
        until: Timestamp,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        self.call("hold_listing", |state| {
            let board = state.boards.entry(key.to_owned()).or_default();
            let held = listing_hold(board.listing_until, until, listing_for, now);
            if held.is_some() {
                board.listing_until = held;
            }
            Ok(held)
        })
    }

    fn put_board(
        &self,
        key: &str,
        listed_at: Timestamp,
        events_seen: u64,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<()> {
        self.call("put_board", |state| {
            let board = state.boards.entry(key.to_owned()).or_default();
            // A slow lister never replaces a newer snapshot with an older one.
            if board.listed_at.is_none_or(|held| held <= listed_at) {
                board.listed_at = Some(listed_at);
                board.events_seen = events_seen;
                board.body = body.to_vec();
            }
            board.listing_until = None;
            Ok(())
        })
    }

    fn add_board_hint(&self, key: &str, hint: &[u8], now: Timestamp) -> Result<u64> {
        self.call("add_board_hint", |state| {
            let board = state.boards.entry(key.to_owned()).or_default();
            let stale = now.saturating_sub(HINT_RETENTION);
            board.hints.retain(|_, (at, _)| *at > stale);
            board.last_hint += 1;
            board.hints.insert(board.last_hint, (now, hint.to_vec()));
            Ok(board.last_hint)
        })
    }

    fn board_hints_after(&self, key: &str, after: u64) -> Result<BoardHints> {
        self.call("board_hints_after", |state| {
            let Some(board) = state.boards.get(key) else {
                return Ok(BoardHints::default());
            };
            Ok(BoardHints {
                hints: board
                    .hints
                    .range(after.saturating_add(1)..)
                    .map(|(_, (_, hint))| hint.clone())
                    .collect(),
                last: board.last_hint,
            })
        })
    }
}
