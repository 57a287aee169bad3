//! The ledger's contract, whatever a store keeps its data in: the
//! [`LedgerStore`] trait every store implements, the [`FleetStore`] trait
//! for what a fleet shares besides slots (and [`Store`], both), and the
//! cap rule every store applies ([`admission`]).
//!
//! This side of the crate has no storage engine in it, so a store in
//! another crate (or a service that only reasons about slots) depends on the
//! contract alone. The redb store, [`Ledger`](crate::Ledger), is behind the
//! `store` feature.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::{
    AdmitOutcome, AdmitRequest, Backend, BackendLimits, Denial, DenyReason, Event, EventKind,
    ExecutorIdentity, FinishOutcome, FinishReason, Limits, Owner, RateWindow, Result, RunId, Slot,
    SlotKey, TaskAttempts, TaskId, Timestamp, UpdateOutcome,
};

/// An in-flight ledger: open slots, the caps they count against, and the
/// audit log of every decision.
///
/// Every implementation keeps these promises, which the conformance suite
/// (`ledger_core::conformance`, feature `conformance`) checks:
///
/// - **Atomic admission.** [`admit`](Self::admit) checks every cap with
///   [`admission`] and records the start in one step that no other admission
///   (in any process or host sharing the store) can interleave with: the
///   caps are never exceeded. Admitting a run that is already open returns
///   its slot unchanged, so a retry after an ambiguous failure is safe. A
///   denial is recorded as a `denied` event.
/// - **Conditional, idempotent finish.** [`finish`](Self::finish) with a run
///   id closes the slot only if that run holds it, so a late finish never
///   closes a newer run of the same key; finishing what is not open changes
///   nothing and says so.
/// - **An ordered audit log.** Every start, finish and denial is an
///   [`Event`] with a sequence number above every earlier one's (a store
///   shared by several hosts may skip the numbers of transactions that
///   rolled back; the redb store never does); nothing acknowledged is lost,
///   and a reader following the log with
///   [`events_after`](Self::events_after) never misses an event.
/// - **Retention that never drops an open slot.** [`prune`](Self::prune)
///   removes old events, never an open slot, nor the start of one.
/// - **Durability.** A change is durable when the call returns.
///
/// Calls block (a durable commit, a wait for another writer): async callers
/// run them on a blocking thread.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait LedgerStore: Send + Sync + fmt::Debug {
    /// Where the ledger lives, for messages and `status`: a file's path, a
    /// database URL without its password.
    fn location(&self) -> String;

    /// Opens a slot if every cap allows it (see the trait's promises).
    fn admit(
        &self,
        request: &AdmitRequest,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<AdmitOutcome>;

    /// Closes `key`'s slot; with `expected_run`, only if that run holds it.
    // The named lifetime is for mockall's mock, which cannot elide it.
    #[allow(clippy::needless_lifetimes)]
    fn finish<'a>(
        &self,
        key: &SlotKey,
        expected_run: Option<&'a RunId>,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome>;

    /// Extends the lease of `run`'s slot to `lease` past `now` (never
    /// shortening it). A store with a clock of its own, shared by every
    /// host, measures `lease` from its "now" instead, so that a host whose
    /// clock runs ahead cannot stretch its lease.
    fn renew_lease(
        &self,
        key: &SlotKey,
        run: &RunId,
        lease: Duration,
        now: Timestamp,
    ) -> Result<UpdateOutcome>;

    /// Renews, in one step, the lease of every open slot that `runner`
    /// holds (the same host, boot and runner process) to `lease` past `now`
    /// (measured as [`renew_lease`](Self::renew_lease) does), and returns
    /// their keys and runs. A slot its holder counts as its own and that is
    /// missing here was reclaimed: its executor must stop.
    fn renew_leases(
        &self,
        runner: &Owner,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<(SlotKey, RunId)>>;

    /// Records the executor `run`'s slot started.
    fn set_executor(
        &self,
        key: &SlotKey,
        run: &RunId,
        executor: ExecutorIdentity,
    ) -> Result<UpdateOutcome>;

    /// Replaces the holder of `run`'s slot with `holder`, if `run` still
    /// holds it: a runner's hand-over to its keeper (the keeper records
    /// itself), and the keeper's record of how its executor ended
    /// ([`Owner::outcome`]). Only the slot's current holder calls it.
    fn set_holder(&self, key: &SlotKey, run: &RunId, holder: &Owner) -> Result<UpdateOutcome>;

    /// The store's time: its own clock when it has one that every host
    /// sharing it reads (PostgreSQL's), else `local`. Orphan rules judge
    /// leases by it.
    fn now(&self, local: Timestamp) -> Result<Timestamp> {
        Ok(local)
    }

    /// Every open slot, ordered by backend then task id.
    fn open_slots(&self) -> Result<Vec<Slot>>;

    /// The open slot under `key`, if any.
    fn slot(&self, key: &SlotKey) -> Result<Option<Slot>>;

    /// The most recent `finished` event of `key`, if the retained log has
    /// one.
    fn last_finish(&self, key: &SlotKey) -> Result<Option<Event>>;

    /// How `task`'s dispatches have ended, over the retained log.
    fn attempts(&self, task: &TaskId) -> Result<TaskAttempts>;

    /// Up to `limit` events with a sequence number above `after`, in order.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>>;

    /// Events from `from` (inclusive) to `to` (exclusive), in order.
    fn events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Event>>;

    /// The newest `limit` events with a sequence number below `before`,
    /// oldest first: the log read backwards, a page at a time (an
    /// operator's "recent events": `events_before(u64::MAX, 50)`). This
    /// default reads the whole log; the stores of this workspace read only
    /// the page.
    fn events_before(&self, before: u64, limit: usize) -> Result<Vec<Event>> {
        newest_in_log(self, limit, |e| e.seq < before)
    }

    /// The newest `limit` retained events of `task` (its starts, finishes
    /// and denials, on any backend), oldest first: a task's history for an
    /// operator. This default reads the whole log; the stores of this
    /// workspace answer from an index by task.
    fn task_events(&self, task: &TaskId, limit: usize) -> Result<Vec<Event>> {
        newest_in_log(self, limit, |e| {
            e.kind.key().is_some_and(|key| key.task_id == *task)
        })
    }

    /// When `backend`'s starts after `since` (exclusive) were, oldest
    /// first: what its rate caps count (a start is in a window of length
    /// `L` at `now` while it is later than `now - L`). This default reads
    /// the log; the stores of this workspace read their start index.
    fn starts_after(&self, backend: &Backend, since: Timestamp) -> Result<Vec<Timestamp>> {
        let events = self.events_between(
            since.saturating_add(Duration::from_millis(1)),
            Timestamp::from_unix_millis(i64::MAX),
        )?;
        Ok(events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Started { key, .. } if key.backend == *backend => Some(e.at),
                _ => None,
            })
            .collect())
    }

    /// Removes events older than the store's retention, never an open slot
    /// nor the event that started one.
    fn prune(&self, now: Timestamp) -> Result<PruneReport>;

    /// Imports the reference system's `usage.json` (see
    /// [`ImportReport`]): idempotent, malformed entries counted, never fatal.
    fn import_usage_json(&self, path: &Path) -> Result<ImportReport>;

    /// Takes the lock that lets one process at a time sweep for orphans at
    /// start-up, waiting at most `timeout`; `Ok(None)` when another process
    /// holds it. Dropping the token releases it.
    fn startup_lock(&self, timeout: Duration) -> Result<Option<StoreLock>>;
}

/// The newest `limit` events of the whole log that `keep` accepts, oldest
/// first, read a page at a time: the default of the reads a store answers
/// from an index of its own.
fn newest_in_log<S: LedgerStore + ?Sized>(
    store: &S,
    limit: usize,
    keep: impl Fn(&Event) -> bool,
) -> Result<Vec<Event>> {
    const PAGE: usize = 10_000;
    let mut found = std::collections::VecDeque::new();
    let mut after = 0;
    loop {
        let page = store.events_after(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in page.into_iter().filter(|e| keep(e)) {
            found.push_back(event);
            if found.len() > limit {
                found.pop_front();
            }
        }
    }
    Ok(found.into())
}

/// What a fleet of runners shares through the ledger's store besides its
/// slots: a Plane API key's request budget, the board's snapshot, and the
/// hints webhooks leave. Every store that implements [`LedgerStore`]
/// implements this too, over the same data (a board snapshot records where
/// the audit log stood); the conformance suite checks both. Callers that
/// need both hold a [`Store`].
///
/// Calls block, as the ledger's do.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait FleetStore: Send + Sync + fmt::Debug {
    /// Takes one request from the shared budget `key` (a Plane API key's
    /// fingerprint, never the key): at most `limit` takes in any `window`,
    /// counted for every process and host sharing the store. Answers
    /// [`BudgetAnswer::Taken`] (the take is recorded) when the window has
    /// room and no pause is in force, else how long until it may have.
    /// Times are the store's (see [`LedgerStore::now`]).
    fn take_budget(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetAnswer>;

    /// Records Plane's word that `used` requests of `key` are in its
    /// window now (its limit less an answer's `X-RateLimit-Remaining`).
    /// Plane counts every request made with the key; when the window here
    /// holds fewer takes, the rest came from outside the fleet (another
    /// program, a `--once` run, a `check-config`), and takes are added at
    /// `now` up to `used`, so that no process spends what Plane would
    /// refuse. How many were added.
    fn note_budget_used(
        &self,
        key: &str,
        used: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<u32>;

    /// `key`'s budget as it stands at `now`, read without changing it (an
    /// operator's view; a read-only store answers it): the takes within
    /// the last `window`, and the pause in force, if any.
    fn budget_state(&self, key: &str, window: Duration, now: Timestamp) -> Result<BudgetState>;

    /// Refuses every take from `key` until `wait` past `now` (Plane's 429
    /// `Retry-After` applies to the key, so to every process using it).
    /// Never shortens a pause in force.
    fn pause_budget(&self, key: &str, wait: Duration, now: Timestamp) -> Result<()>;

    /// A look at the shared board snapshot `key` (a Plane project's
    /// work items, as bytes the caller encodes), so that one listing serves
    /// every process sharing the store. Decides by [`board_rule`]: a
    /// snapshot younger than `max_age` is [`BoardLook::Fresh`]; else the
    /// first caller gets [`BoardLook::YoursToList`] (and is expected to
    /// call [`put_board`](Self::put_board) within `listing_for`, or hold
    /// its claim longer with [`hold_listing`](Self::hold_listing)), and
    /// the others [`BoardLook::BeingListed`] until then. Times are the
    /// store's.
    fn board_look(
        &self,
        key: &str,
        max_age: Duration,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<BoardLook>;

    /// Stores `body` as the snapshot `key`, listed from `listed_at` on and
    /// covering the audit log up to `events_seen` (both from the
    /// [`BoardLook::YoursToList`] that asked for it), and ends the listing.
    fn put_board(
        &self,
        key: &str,
        listed_at: Timestamp,
        events_seen: u64,
        body: &[u8],
        now: Timestamp,
    ) -> Result<()>;

    /// Holds board `key`'s listing claim, known by the `until` its claim
    /// (or its last hold) answered, for `listing_for` more from the store's
    /// now: a lister renews it while it lists, so that a lister that dies
    /// is replaced within one `listing_for`, and a live one however long
    /// its listing takes. `Duration::ZERO` gives the claim up (a lister
    /// that stops). The claim's new end, or `None` when the claim is no
    /// longer this one (its snapshot was stored, or it lapsed and another
    /// process claimed the board).
    fn hold_listing(
        &self,
        key: &str,
        until: Timestamp,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>>;

    /// Appends a hint (a webhook's news of one work item, as bytes the
    /// caller encodes) to board `key`'s hint log, and returns its sequence
    /// number: one above every earlier hint of the key. Hints older than
    /// [`HINT_RETENTION`] are dropped: a hint is news, not a record.
    fn add_board_hint(&self, key: &str, hint: &[u8], now: Timestamp) -> Result<u64>;

    /// Board `key`'s hints numbered above `after`, oldest first, and the
    /// newest hint's number (`0` when there never was one). A reader
    /// starting out asks with `u64::MAX` to learn where the log stands.
    fn board_hints_after(&self, key: &str, after: u64) -> Result<BoardHints>;
}

/// A store with both contracts: what the store factory returns and the
/// runner holds. Every type that implements both is one; an
/// `Arc<dyn Store>` converts to an `Arc<dyn LedgerStore>` or an
/// `Arc<dyn FleetStore>` for code that needs only one.
pub trait Store: LedgerStore + FleetStore {}

impl<T: LedgerStore + FleetStore + ?Sized> Store for T {}

/// How long a board hint is kept.
pub const HINT_RETENTION: Duration = Duration::from_secs(600);

/// A board snapshot, as [`FleetStore::board_look`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardSnapshot {
    /// When its listing began: what changed on the board since may be
    /// missing from it.
    pub listed_at: Timestamp,
    /// The audit log's newest sequence number when its listing began: the
    /// starts numbered above it were admitted since, so a reader skips
    /// their tasks rather than claim what another runner took.
    pub events_seen: u64,
    /// The caller's encoding of the board.
    pub body: Vec<u8>,
}

/// What [`FleetStore::board_look`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardLook {
    /// A snapshot young enough: use it, list nothing.
    Fresh(BoardSnapshot),
    /// List the board and [`put_board`](FleetStore::put_board) it; no one
    /// else is asked to until `listing_for` has passed.
    YoursToList {
        /// The listing's start, to pass to `put_board`.
        listed_at: Timestamp,
        /// The audit log's newest sequence number now, to pass to
        /// `put_board`.
        events_seen: u64,
        /// Until when the claim holds off other listers, to pass to
        /// [`hold_listing`](FleetStore::hold_listing).
        until: Timestamp,
        /// The last snapshot, however old.
        previous: Option<BoardSnapshot>,
    },
    /// Another process is listing the board, until `until` at the latest.
    BeingListed {
        /// The last snapshot, however old: use it, or wait for the new one.
        previous: Option<BoardSnapshot>,
        /// When the listing is given up on and asked of someone else.
        until: Timestamp,
    },
}

/// [`FleetStore::board_hints_after`]'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardHints {
    /// The hints above the number asked from, oldest first.
    pub hints: Vec<Vec<u8>>,
    /// The newest hint's number: ask from it next time.
    pub last: u64,
}

/// What a board look decides, for [`board_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardVerdict {
    /// The snapshot is young enough.
    Fresh,
    /// The caller lists; the listing is recorded until the given time.
    List(Timestamp),
    /// Someone is listing until the given time.
    Wait(Timestamp),
}

/// The board rule, shared by every store: from when the snapshot's listing
/// began (`None`: there is none) and until when a listing is in progress,
/// whether a look at `now` is served, lists, or waits for another's list.
pub fn board_rule(
    listed_at: Option<Timestamp>,
    listing_until: Option<Timestamp>,
    max_age: Duration,
    listing_for: Duration,
    now: Timestamp,
) -> BoardVerdict {
    if let Some(listed) = listed_at
        && now.duration_since(listed) < max_age
        && listed <= now
    {
        return BoardVerdict::Fresh;
    }
    match listing_until {
        Some(until) if until > now => BoardVerdict::Wait(until),
        _ => BoardVerdict::List(now.saturating_add(listing_for)),
    }
}

/// [`FleetStore::hold_listing`]'s rule, shared by every store: a claim known
/// by `until` is still the caller's when the board's listing ends then (no
/// snapshot stored since, no other claim after it lapsed); it then ends
/// `listing_for` after `now`. `None`: not the caller's any more.
pub fn listing_hold(
    listing_until: Option<Timestamp>,
    until: Timestamp,
    listing_for: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    (listing_until == Some(until)).then(|| now.saturating_add(listing_for))
}

/// What a board look does, as [`board_step`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardStep {
    /// Answer with this look; nothing changes.
    Answer(BoardLook),
    /// The caller lists the board: record the listing until `until` and
    /// answer [`BoardLook::YoursToList`] with `previous`.
    Claim {
        /// Until when the listing holds off other listers.
        until: Timestamp,
        /// The last snapshot, however old.
        previous: Option<BoardSnapshot>,
    },
}

/// [`board_rule`] applied to a board as a store holds it (its last
/// snapshot, and until when a listing is in progress): the one place every
/// store's `board_look` decides what to answer.
pub fn board_step(
    previous: Option<BoardSnapshot>,
    listing_until: Option<Timestamp>,
    max_age: Duration,
    listing_for: Duration,
    now: Timestamp,
) -> BoardStep {
    let listed_at = previous.as_ref().map(|s| s.listed_at);
    match (
        board_rule(listed_at, listing_until, max_age, listing_for, now),
        previous,
    ) {
        (BoardVerdict::Fresh, Some(fresh)) => BoardStep::Answer(BoardLook::Fresh(fresh)),
        (BoardVerdict::Wait(until), previous) => {
            BoardStep::Answer(BoardLook::BeingListed { previous, until })
        }
        (BoardVerdict::List(until), previous) => BoardStep::Claim { until, previous },
        // Fresh needs a snapshot; without one, there is only listing.
        (BoardVerdict::Fresh, None) => BoardStep::Claim {
            until: now.saturating_add(listing_for),
            previous: None,
        },
    }
}

/// What [`FleetStore::take_budget`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAnswer {
    /// Taken and recorded: the window now holds `in_window` takes.
    Taken {
        /// Takes in the window, this one included.
        in_window: u32,
    },
    /// Not taken: try again in `wait`.
    Wait {
        /// Until the oldest take leaves the window, or the pause ends.
        wait: Duration,
        /// Takes in the window now.
        in_window: u32,
        /// Whether a pause (a 429's `Retry-After`) is what holds it.
        paused: bool,
    },
}

/// A shared budget as it stands ([`FleetStore::budget_state`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BudgetState {
    /// Takes within the window.
    pub in_window: u32,
    /// When the pause in force (a 429's `Retry-After`) ends; `None` when
    /// no pause is in force.
    pub paused_until: Option<Timestamp>,
}

impl BudgetState {
    /// The state of a budget whose takes are `takes` and whose pause ends
    /// at `paused_until`, at `now`, for a window of `window`.
    pub fn of(
        takes: impl IntoIterator<Item = Timestamp>,
        paused_until: Option<Timestamp>,
        window: Duration,
        now: Timestamp,
    ) -> BudgetState {
        let start = now.saturating_sub(window);
        let in_window = takes.into_iter().filter(|t| *t > start).count();
        BudgetState {
            in_window: u32::try_from(in_window).unwrap_or(u32::MAX),
            paused_until: paused_until.filter(|until| *until > now),
        }
    }
}

/// How many takes a window holding `takes` lacks when Plane counts `used`
/// requests of the key in its own: the requests made outside the fleet,
/// which every store adds ([`FleetStore::note_budget_used`]).
pub fn budget_shortfall(takes: usize, used: u32) -> u32 {
    used.saturating_sub(u32::try_from(takes).unwrap_or(u32::MAX))
}

/// The budget rule, shared by every store: given the times of the takes
/// still in the window (oldest first) and a pause's end, whether a take at
/// `now` fits. A store keeps the takes and the pause; this decides (as
/// [`budget_counted`], from what it needs of them).
pub fn budget(
    takes: &[Timestamp],
    paused_until: Option<Timestamp>,
    limit: u32,
    window: Duration,
    now: Timestamp,
) -> BudgetAnswer {
    let in_window = u32::try_from(takes.len()).unwrap_or(u32::MAX);
    let leaving = takes
        .len()
        .checked_sub(limit as usize)
        .and_then(|i| takes.get(i))
        .copied();
    budget_counted(in_window, leaving, paused_until, limit, window, now)
}

/// [`budget`] from the two figures it reads of the takes: how many are in
/// the window, and, when that is `limit` or more, the take whose leaving
/// makes room for one more (the `(in_window - limit + 1)`-th oldest). A
/// store that keeps a count need not read every take.
pub fn budget_counted(
    in_window: u32,
    leaving: Option<Timestamp>,
    paused_until: Option<Timestamp>,
    limit: u32,
    window: Duration,
    now: Timestamp,
) -> BudgetAnswer {
    if let Some(until) = paused_until
        && until > now
    {
        return BudgetAnswer::Wait {
            wait: until.duration_since(now),
            in_window,
            paused: true,
        };
    }
    if in_window < limit {
        return BudgetAnswer::Taken {
            in_window: in_window + 1,
        };
    }
    // With the limit lowered below what the window holds, enough of the
    // oldest must leave for one to fit.
    let frees = leaving.map_or(now, |oldest| oldest.saturating_add(window));
    BudgetAnswer::Wait {
        wait: frees.duration_since(now).max(Duration::from_millis(1)),
        in_window,
        paused: false,
    }
}

/// Proof that this process holds a store's start-up lock; dropping it
/// releases the lock.
pub struct StoreLock(#[allow(dead_code)] Box<dyn Send>);

impl StoreLock {
    /// Wraps whatever keeps the lock held.
    pub fn new(guard: impl Send + 'static) -> Self {
        Self(Box::new(guard))
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreLock")
    }
}

/// What [`LedgerStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Events removed.
    pub events_removed: u64,
}

/// What an import of the reference system's `usage.json` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Entries in the file's `events` array.
    pub entries: u64,
    /// Well-formed `execution_started` entries.
    pub started: u64,
    /// Well-formed `execution_finished` entries.
    pub finished: u64,
    /// Entries of other kinds, skipped on purpose.
    pub unrelated: u64,
    /// Entries that could not be read (not an object, a missing or
    /// non-string field, an invalid id, an unparsable timestamp): skipped
    /// and counted, never fatal.
    pub malformed: u64,
    /// The first few malformed entries, with why: index and reason.
    pub malformed_examples: Vec<(usize, String)>,
    /// Events added to the audit log by this import.
    pub events_recorded: u64,
    /// Entries already taken in by an earlier import.
    pub already_imported: u64,
    /// Slots this import opened.
    pub slots_opened: u64,
    /// Slots of an earlier import this one closed (the file has since
    /// recorded their finish).
    pub slots_closed: u64,
    /// Slots the file says are open but which a live run already holds in the
    /// ledger: left to that run.
    pub slots_held_by_other_runs: u64,
    /// The slots the file's events leave open, in key order.
    pub open_after_fold: Vec<SlotKey>,
}

/// What an admission is decided from: counts a store reads inside the
/// transaction that will record the start. Rate counts are needed only when
/// the backend has that cap (`None` otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionCounts {
    /// Whether the key already holds a slot (of another run).
    pub key_in_flight: bool,
    /// Open slots across every backend.
    pub open_total: u64,
    /// Open slots of the request's backend.
    pub open_backend: u64,
    /// Starts of the backend within the last hour.
    pub starts_last_hour: Option<u64>,
    /// Starts of the backend within the last 24 hours.
    pub starts_last_day: Option<u64>,
}

/// The cap rule, shared by every store: `None` admits, `Some` names the
/// first cap that fires, in this order: the key is already in flight, the
/// global cap, the backend's `max_concurrent`, its hourly, then its daily
/// rate. A rate cap whose count is missing is not checked.
pub fn admission(counts: &AdmissionCounts, limits: &Limits) -> Option<Denial> {
    let deny = |reason, window, current: u64, limit| {
        Some(Denial {
            reason,
            window,
            current: u32::try_from(current).unwrap_or(u32::MAX),
            limit,
        })
    };
    if counts.key_in_flight {
        return deny(DenyReason::AlreadyInFlight, None, 1, 1);
    }
    if let Some(limit) = limits.global_max_concurrent
        && counts.open_total >= u64::from(limit)
    {
        return deny(
            DenyReason::GlobalConcurrencyExceeded,
            None,
            counts.open_total,
            limit,
        );
    }
    let limit = limits.backend.max_concurrent;
    if counts.open_backend >= u64::from(limit) {
        return deny(
            DenyReason::BackendConcurrencyExceeded,
            None,
            counts.open_backend,
            limit,
        );
    }
    for (window, limit, current) in [
        (
            RateWindow::Hourly,
            limits.backend.max_per_hour,
            counts.starts_last_hour,
        ),
        (
            RateWindow::Daily,
            limits.backend.max_per_day,
            counts.starts_last_day,
        ),
    ] {
        if let (Some(limit), Some(current)) = (limit, current)
            && current >= u64::from(limit)
        {
            return deny(
                DenyReason::BackendRateExceeded,
                Some(window),
                current,
                limit,
            );
        }
    }
    None
}

/// When the next start of a backend is allowed by its rate caps, given
/// its starts within the last day (`starts_after(now - 1 day)`, any order):
/// `None` when both windows have room now, else the later of the times
/// each full window next has room (when enough of its starts have left it),
/// and which window that is. The same window rule as [`admission`]'s
/// counts: a start counts while it is later than `now` minus the window.
pub fn next_start_allowed(
    starts: &[Timestamp],
    limits: &BackendLimits,
    now: Timestamp,
) -> Option<(RateWindow, Timestamp)> {
    let mut sorted = starts.to_vec();
    sorted.sort();
    let mut answer: Option<(RateWindow, Timestamp)> = None;
    for (window, limit) in [
        (RateWindow::Hourly, limits.max_per_hour),
        (RateWindow::Daily, limits.max_per_day),
    ] {
        let Some(limit) = limit else { continue };
        let since = now.saturating_sub(window.length());
        let inside: Vec<Timestamp> = sorted.iter().copied().filter(|s| *s > since).collect();
        // The window has room once `inside.len() - limit + 1` starts left
        // it: when the start `limit` from the newest leaves. None when it
        // has room now, with fewer starts than the cap (a cap of 0, which
        // the configuration refuses, is not told apart).
        let Some(nth) = (inside.len())
            .checked_sub(limit as usize)
            .and_then(|i| inside.get(i))
        else {
            continue;
        };
        let leaves = nth.saturating_add(window.length());
        if answer.is_none_or(|(_, at)| leaves > at) {
            answer = Some((window, leaves));
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendLimits;

    /// The next allowed start is when the window's count falls under its
    /// cap, checked against the cap rule itself one millisecond before and
    /// at that time.
    #[test]
    fn the_next_start_is_allowed_when_the_full_window_has_room() {
        let t0 = Timestamp::from_unix_millis(10 * 86_400_000);
        let minutes = |m: u64| t0.saturating_add(Duration::from_secs(m * 60));
        let starts: Vec<Timestamp> = [0, 10, 20, 30].map(minutes).to_vec();
        let caps = |hour, day| BackendLimits {
            max_concurrent: 100,
            max_per_hour: hour,
            max_per_day: day,
        };
        let now = minutes(40);
        assert_eq!(next_start_allowed(&starts, &caps(Some(5), None), now), None);
        // Three an hour: two of the four must leave; the second leaves at 70.
        let (window, at) = next_start_allowed(&starts, &caps(Some(3), None), now).unwrap();
        assert_eq!((window, at), (RateWindow::Hourly, minutes(70)));
        // Four a day as well: the daily window is the later one.
        let (window, at) = next_start_allowed(&starts, &caps(Some(3), Some(4)), now).unwrap();
        assert_eq!((window, at), (RateWindow::Daily, minutes(24 * 60)));
        // Checked against the rule: denied just before, admitted at it.
        for (limits, at) in [
            (caps(Some(3), None), minutes(70)),
            (caps(Some(3), Some(4)), minutes(24 * 60)),
        ] {
            let counts_at = |now: Timestamp| {
                let count = |w: RateWindow| {
                    Some(
                        starts
                            .iter()
                            .filter(|s| **s > now.saturating_sub(w.length()))
                            .count() as u64,
                    )
                };
                AdmissionCounts {
                    starts_last_hour: count(RateWindow::Hourly),
                    starts_last_day: count(RateWindow::Daily),
                    ..AdmissionCounts::default()
                }
            };
            let limits = Limits {
                global_max_concurrent: None,
                backend: limits,
            };
            let before = at.saturating_sub(Duration::from_millis(1));
            assert!(admission(&counts_at(before), &limits).is_some());
            assert_eq!(admission(&counts_at(at), &limits), None);
            assert_eq!(next_start_allowed(&starts, &limits.backend, at), None);
        }
    }

    fn limits(global: Option<u32>, max: u32, hour: Option<u32>, day: Option<u32>) -> Limits {
        Limits {
            global_max_concurrent: global,
            backend: BackendLimits {
                max_concurrent: max,
                max_per_hour: hour,
                max_per_day: day,
            },
        }
    }

    fn counts(in_flight: bool, total: u64, backend: u64, hour: u64, day: u64) -> AdmissionCounts {
        AdmissionCounts {
            key_in_flight: in_flight,
            open_total: total,
            open_backend: backend,
            starts_last_hour: Some(hour),
            starts_last_day: Some(day),
        }
    }

    /// A denial as the table writes it: reason, window, current, limit.
    type Verdict = Option<(DenyReason, Option<RateWindow>, u32, u32)>;

    /// The rule as a table: counts, caps, and the verdict.
    #[test]
    fn the_cap_rule() {
        use DenyReason::*;
        let caps = limits(Some(4), 2, Some(10), Some(20));
        let cases: &[(AdmissionCounts, Limits, Verdict)] = &[
            (counts(false, 0, 0, 0, 0), caps, None),
            (counts(false, 3, 1, 9, 19), caps, None),
            (
                counts(true, 0, 0, 0, 0),
                caps,
                Some((AlreadyInFlight, None, 1, 1)),
            ),
            // In flight wins over every cap.
            (
                counts(true, 9, 9, 99, 99),
                caps,
                Some((AlreadyInFlight, None, 1, 1)),
            ),
            (
                counts(false, 4, 1, 0, 0),
                caps,
                Some((GlobalConcurrencyExceeded, None, 4, 4)),
            ),
            // The global cap comes before the backend's.
            (
                counts(false, 5, 2, 0, 0),
                caps,
                Some((GlobalConcurrencyExceeded, None, 5, 4)),
            ),
            (
                counts(false, 2, 2, 0, 0),
                caps,
                Some((BackendConcurrencyExceeded, None, 2, 2)),
            ),
            (
                counts(false, 1, 1, 10, 10),
                caps,
                Some((BackendRateExceeded, Some(RateWindow::Hourly), 10, 10)),
            ),
            // The hourly window comes before the daily one.
            (
                counts(false, 1, 1, 10, 30),
                caps,
                Some((BackendRateExceeded, Some(RateWindow::Hourly), 10, 10)),
            ),
            (
                counts(false, 1, 1, 3, 20),
                caps,
                Some((BackendRateExceeded, Some(RateWindow::Daily), 20, 20)),
            ),
            // No global cap, no rate caps: only the backend's concurrency.
            (
                counts(false, 99, 1, 99, 99),
                limits(None, 2, None, None),
                None,
            ),
            (
                counts(false, 0, 2, 0, 0),
                limits(None, 2, None, None),
                Some((BackendConcurrencyExceeded, None, 2, 2)),
            ),
            // A rate cap whose count the store did not read is not checked.
            (
                AdmissionCounts {
                    starts_last_hour: None,
                    ..counts(false, 0, 0, 0, 0)
                },
                limits(None, 2, Some(0), None),
                None,
            ),
        ];
        for (i, (counts, limits, want)) in cases.iter().enumerate() {
            let got = admission(counts, limits).map(|d| (d.reason, d.window, d.current, d.limit));
            assert_eq!(got, *want, "case {i}: {counts:?} against {limits:?}");
        }
    }

    #[test]
    fn counts_beyond_u32_saturate() {
        let denial = admission(
            &counts(false, u64::MAX, 0, 0, 0),
            &limits(Some(1), 1, None, None),
        )
        .unwrap();
        assert_eq!(denial.current, u32::MAX);
    }
}
