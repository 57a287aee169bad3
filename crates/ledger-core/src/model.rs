//! The ledger's data: who holds a slot, the slot itself, the caps, and the
//! audit events. Everything here is plain data with a stable JSON form, since
//! it is what the redb tables hold and what operators read.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Backend, RunId, TaskId, Timestamp};

/// One process, identified so that pid reuse cannot fool a liveness check:
/// a pid plus the process's start time (field 22 of `/proc/<pid>/stat`, in
/// clock ticks since boot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

/// The executor child a runner spawned for a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorIdentity {
    /// The executor's pid and start time.
    #[serde(flatten)]
    pub process: ProcessIdentity,
    /// The process group the executor leads; what is left of it is
    /// terminated when the slot of a dead owner is reclaimed.
    pub process_group: u32,
}

/// Who holds a slot: the holding process on a given host and boot, and,
/// once spawned, its executor child.
///
/// The holder is the runner that admitted the slot until it hands the run
/// to a keeper (a process of its own that supervises the executor and
/// outlives the runner); from then on the holder is the keeper, `keeper`
/// names its protocol version, and the keeper records the executor's end in
/// `outcome` before it exits, for a runner to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Host name of the holder.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id` of that host when the slot was taken:
    /// a different boot id means every pid recorded here is gone.
    pub boot_id: String,
    /// The holding process: the runner, or once handed over, the keeper
    /// (the field keeps its first name so that older ledgers read alike).
    pub runner: ProcessIdentity,
    /// The executor child, once spawned.
    #[serde(default)]
    pub executor: Option<ExecutorIdentity>,
    /// The runner's role (which board column it claims from), so that a
    /// reclaimed task can be put back where it came from.
    #[serde(default)]
    pub role: Option<String>,
    /// The task source's project the runner claimed the task from, so that
    /// a scan configured for another project never judges the slot by that
    /// project's answers. `None` for slots written before it was recorded
    /// and for imported ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectRef>,
    /// The keeper protocol version when the holder is a keeper
    /// ([`KEEPER_PROTOCOL`] for keepers of this build); `None` while a
    /// runner holds the slot itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<u32>,
    /// How the executor ended, recorded by its keeper before the keeper
    /// exits: a slot with an outcome is reported, never reclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// The task's title when its runner admitted it, for an operator's
    /// listings (`watchdog status`, `explain`, the web page): the ledger
    /// otherwise knows a task only by its id. `None` for slots written
    /// before it was recorded and for imported ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The keeper protocol this build speaks: what a keeper records in its slot
/// (itself as the holder, its executor, the outcome) and how a runner reads
/// it. A runner adopts the keepers of a version it knows and leaves the
/// others alone.
pub const KEEPER_PROTOCOL: u32 = 1;

/// How a keeper's executor ended, as recorded in its slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// What ended it.
    pub ending: RunEnding,
    /// How long it ran, in milliseconds.
    pub took_ms: u64,
    /// When the keeper recorded it.
    pub ended_at: Timestamp,
    /// The last lines of its output (bounded, control characters removed)
    /// when it did not succeed, for the task's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
}

impl RunOutcome {
    /// Whether the executor exited 0.
    pub fn succeeded(&self) -> bool {
        matches!(self.ending, RunEnding::Exited { code: 0 })
    }
}

/// What ended an executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEnding {
    /// It exited with this status.
    Exited {
        /// The exit status.
        code: i32,
    },
    /// A signal killed it.
    Killed {
        /// The signal.
        signal: i32,
    },
    /// It reached the backend's `timeout_secs` and was stopped.
    TimedOut {
        /// The timeout, in seconds.
        limit_secs: u64,
    },
    /// An operator (or a runner stopping with `on_stop = "interrupt"`)
    /// stopped it.
    Interrupted,
    /// Its keeper stopped it before the slot's lease could run out, because
    /// the ledger did not answer the renewals (so that no other host can
    /// start the task while it still runs here).
    Fenced,
    /// It could not be started.
    NotLaunched {
        /// Why.
        why: String,
    },
}

/// A project of the task source (Plane): the workspace slug and the
/// project's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProjectRef {
    /// The workspace slug.
    pub workspace: String,
    /// The project's id.
    pub project_id: String,
}

impl fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workspace, self.project_id)
    }
}

impl Owner {
    /// Whether `self` and `other` are the same process: the same host, boot
    /// and process (pid and start time). What a holder's lease renewal
    /// matches its slots by.
    pub fn same_process(&self, other: &Owner) -> bool {
        self.host == other.host && self.boot_id == other.boot_id && self.runner == other.runner
    }

    /// The host name given to slots rebuilt from the reference system's
    /// `usage.json`, whose owners are not known. No real host has this name,
    /// so a liveness check answers "unknown" for them, never "dead".
    pub const IMPORTED_HOST: &'static str = "(imported from usage.json)";

    /// The owner of a slot rebuilt by an import.
    pub fn imported() -> Self {
        Owner {
            host: Self::IMPORTED_HOST.to_owned(),
            boot_id: String::new(),
            runner: ProcessIdentity {
                pid: 0,
                start_time: 0,
            },
            executor: None,
            role: None,
            project: None,
            keeper: None,
            outcome: None,
            title: None,
        }
    }
}

/// The key of a slot: one task on one backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotKey {
    /// The backend whose cap the slot counts against.
    pub backend: Backend,
    /// The task being run.
    pub task_id: TaskId,
}

impl SlotKey {
    /// Builds a key.
    pub fn new(backend: Backend, task_id: TaskId) -> Self {
        Self { backend, task_id }
    }
}

impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.task_id)
    }
}

/// An open slot: a dispatch that has started and not yet finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Backend and task.
    #[serde(flatten)]
    pub key: SlotKey,
    /// This dispatch's run id.
    pub run_id: RunId,
    /// When the slot was admitted.
    pub started_at: Timestamp,
    /// Who holds it.
    pub owner: Owner,
    /// Until when the owner has promised to be working on it; renewed while
    /// the executor runs.
    pub lease_until: Timestamp,
    /// Sequence number of the `started` event that opened it.
    pub started_seq: u64,
}

/// A backend's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendLimits {
    /// How many slots of this backend may be open at once.
    pub max_concurrent: u32,
    /// How many dispatches may start within any sliding hour; `None` for no cap.
    pub max_per_hour: Option<u32>,
    /// How many dispatches may start within any sliding 24 hours; `None` for no cap.
    pub max_per_day: Option<u32>,
}

/// The caps an admission is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// How many slots may be open at once across every backend; `None` for no cap.
    pub global_max_concurrent: Option<u32>,
    /// The caps of the backend being admitted to.
    pub backend: BackendLimits,
}

/// A request to open a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitRequest {
    /// Backend and task.
    pub key: SlotKey,
    /// The run id of this dispatch. Admitting the same run again is
    /// idempotent, so a retry after an ambiguous failure is safe.
    pub run_id: RunId,
    /// Who will hold the slot.
    pub owner: Owner,
    /// How long the first lease lasts.
    pub lease: Duration,
}

/// Which cap refused an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DenyReason {
    /// Too many slots open across all backends.
    GlobalConcurrencyExceeded,
    /// Too many slots of this backend open.
    BackendConcurrencyExceeded,
    /// Too many dispatches of this backend started within the window.
    BackendRateExceeded,
    /// This task already holds a slot on this backend.
    AlreadyInFlight,
}

impl DenyReason {
    /// The snake_case name used in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::GlobalConcurrencyExceeded => "global_concurrency_exceeded",
            DenyReason::BackendConcurrencyExceeded => "backend_concurrency_exceeded",
            DenyReason::BackendRateExceeded => "backend_rate_exceeded",
            DenyReason::AlreadyInFlight => "already_in_flight",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sliding window a rate cap counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateWindow {
    /// The last 60 minutes.
    Hourly,
    /// The last 24 hours.
    Daily,
}

impl RateWindow {
    /// The window's length.
    pub fn length(self) -> Duration {
        match self {
            RateWindow::Hourly => Duration::from_secs(3600),
            RateWindow::Daily => Duration::from_secs(86_400),
        }
    }
}

/// Why an admission was refused, with the figures that made the cap fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// Which cap fired.
    pub reason: DenyReason,
    /// For a rate cap, its window.
    pub window: Option<RateWindow>,
    /// How many slots (or starts in the window) there were.
    pub current: u32,
    /// The cap.
    pub limit: u32,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} of {}", self.reason, self.current, self.limit)?;
        match self.window {
            Some(RateWindow::Hourly) => f.write_str(" in the last hour)"),
            Some(RateWindow::Daily) => f.write_str(" in the last 24 hours)"),
            None => f.write_str(")"),
        }
    }
}

/// What `admit` decided.
// One outcome per admission, moved once: boxing the slot would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitOutcome {
    /// The slot is open and recorded.
    Admitted(Slot),
    /// A cap refused it; a `denied` event was recorded.
    Denied(Denial),
}

/// Why a slot was closed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// The executor exited successfully.
    Completed,
    /// The executor failed or timed out.
    Failed,
    /// The runner was told to stop, or its guard was dropped without an
    /// explicit finish.
    Interrupted,
    /// An orphan rule reclaimed the slot.
    Reconciled {
        /// The rule's name, e.g. `DEAD_OWNER_CLEAR`.
        rule: String,
    },
    /// An operator released the slot by hand.
    ReleasedByOperator,
    /// The slot's lease or window ran out.
    Expired,
    /// Closed by a `usage.json` import (the reference system did not record
    /// how a dispatch ended).
    Imported,
    /// Released before the executor started: the task left its claim state
    /// between the list and the re-read, or could not be marked running.
    /// Not an attempt that counts against `max_attempts`.
    NotStarted,
}

impl FinishReason {
    /// The field of [`TaskAttempts`] (as its JSON form names it) that a
    /// finish for this reason counts in: what
    /// [`TaskAttempts::record_finish`] adds one to.
    pub fn attempts_counter(&self) -> &'static str {
        match self {
            FinishReason::Completed | FinishReason::Imported => "completed",
            FinishReason::Failed => "failed",
            FinishReason::Interrupted => "interrupted",
            FinishReason::Reconciled { .. } => "reconciled",
            FinishReason::ReleasedByOperator => "released",
            FinishReason::Expired => "expired",
            FinishReason::NotStarted => "not_started",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinishReason::Completed => f.write_str("completed"),
            FinishReason::Failed => f.write_str("failed"),
            FinishReason::Interrupted => f.write_str("interrupted"),
            FinishReason::Reconciled { rule } => write!(f, "reconciled by {rule}"),
            FinishReason::ReleasedByOperator => f.write_str("released by operator"),
            FinishReason::Expired => f.write_str("expired"),
            FinishReason::Imported => f.write_str("imported"),
            FinishReason::NotStarted => f.write_str("not started"),
        }
    }
}

/// What `finish` did.
// Finishing is one durable commit; a slot moved by value beside it costs
// nothing worth boxing it for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The slot was open and is now closed; this is the slot as it was.
    Finished(Slot),
    /// No slot is open under that key: it was never admitted or is already
    /// finished. Nothing changed.
    NotInFlight,
    /// A slot is open under that key, but for another run (a newer dispatch
    /// of the same task). Nothing changed.
    OtherRunInFlight {
        /// The run that holds the slot.
        open_run: RunId,
    },
}

/// What a conditional update of an open slot (lease, executor) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The slot was updated.
    Updated,
    /// No slot of that run is open; nothing changed.
    NotInFlight,
}

/// One entry of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log: consecutive, starting at 1.
    pub seq: u64,
    /// When it happened (the caller's clock).
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an [`Event`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
// A start carries its owner whole: events are records read and written one
// at a time, never packed by the thousand in memory, and boxing the owner
// would change the public shape for no gain.
#[allow(clippy::large_enum_variant)]
pub enum EventKind {
    /// A slot was opened.
    Started {
        /// Backend and task.
        #[serde(flatten)]
        key: SlotKey,
        /// The run.
        run_id: RunId,
        /// Who took it.
        owner: Owner,
    },
    /// A slot was closed.
    Finished {
        /// Backend and task.
        #[serde(flatten)]
        key: SlotKey,
        /// The run.
        run_id: RunId,
        /// When the slot had been opened.
        started_at: Timestamp,
        /// Why it closed.
        #[serde(flatten)]
        reason: FinishReason,
        /// The role of the runner that held the slot, if recorded: where
        /// the task belongs on the board.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// An admission was refused.
    Denied {
        /// Backend and task.
        #[serde(flatten)]
        key: SlotKey,
        /// The run that asked.
        run_id: RunId,
        /// Which cap fired, and its figures.
        denial: Denial,
    },
    /// A record of the log that could not be read (damaged, or written by
    /// a newer version): listed in its place, so that one bad record does
    /// not hide the rest of the log. Never written.
    Unreadable {
        /// Why it could not be read.
        detail: String,
    },
}

impl EventKind {
    /// The slot an event concerns (`None` for an unreadable record).
    pub fn key(&self) -> Option<&SlotKey> {
        match self {
            EventKind::Started { key, .. }
            | EventKind::Finished { key, .. }
            | EventKind::Denied { key, .. } => Some(key),
            EventKind::Unreadable { .. } => None,
        }
    }
}

impl Event {
    /// An event from its stored JSON. A record that does not decode is
    /// [`EventKind::Unreadable`] at `seq`, at `at` when the store keeps the
    /// time apart (else the record's own `at` if that much reads, else the
    /// epoch): listing the log reports it in place and goes on.
    pub fn from_stored(seq: u64, at: Option<Timestamp>, json: &[u8]) -> Event {
        match serde_json::from_slice::<Event>(json) {
            Ok(event) => event,
            Err(e) => {
                #[derive(Deserialize)]
                struct AtOnly {
                    at: Timestamp,
                }
                let at = at
                    .or_else(|| serde_json::from_slice::<AtOnly>(json).ok().map(|a| a.at))
                    .unwrap_or(Timestamp::from_unix_millis(0));
                Event {
                    seq,
                    at,
                    kind: EventKind::Unreadable {
                        detail: e.to_string(),
                    },
                }
            }
        }
    }
}

/// How often a task has been dispatched, and how those dispatches ended.
/// Kept per task id across all backends, and never pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAttempts {
    /// Dispatches started: the finished ones plus those still running.
    pub started: u64,
    /// Finished as completed.
    pub completed: u64,
    /// Finished as failed.
    pub failed: u64,
    /// Finished as interrupted.
    pub interrupted: u64,
    /// Reclaimed by an orphan rule.
    pub reconciled: u64,
    /// Released by an operator.
    pub released: u64,
    /// Expired.
    pub expired: u64,
    /// Released before the executor started.
    #[serde(default)]
    pub not_started: u64,
}

impl TaskAttempts {
    /// Attempts that ended without the executor reporting back: the runner
    /// was interrupted or died. A task that keeps killing its runner is
    /// recognised by this count reaching `max_attempts`.
    pub fn lost(&self) -> u64 {
        self.interrupted + self.reconciled + self.expired
    }

    /// Dispatches that have finished, however they ended.
    pub fn finished(&self) -> u64 {
        self.completed
            + self.failed
            + self.interrupted
            + self.reconciled
            + self.released
            + self.expired
            + self.not_started
    }

    /// Counts a finish for `reason` (what every store does as it closes a
    /// slot). The counter is the field [`FinishReason::attempts_counter`]
    /// names (a store that counts in SQL adds one to that field of the
    /// record's JSON).
    pub fn record_finish(&mut self, reason: &FinishReason) {
        let counter = match reason {
            FinishReason::Completed | FinishReason::Imported => &mut self.completed,
            FinishReason::Failed => &mut self.failed,
            FinishReason::Interrupted => &mut self.interrupted,
            FinishReason::Reconciled { .. } => &mut self.reconciled,
            FinishReason::ReleasedByOperator => &mut self.released,
            FinishReason::Expired => &mut self.expired,
            FinishReason::NotStarted => &mut self.not_started,
        };
        *counter += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SlotKey {
        SlotKey::new(Backend::new("local").unwrap(), TaskId::new("T-1").unwrap())
    }

    #[test]
    fn events_have_a_flat_readable_json_form() {
        let event = Event {
            seq: 7,
            at: Timestamp::from_unix_millis(1000),
            kind: EventKind::Finished {
                key: key(),
                run_id: RunId::new("r1").unwrap(),
                started_at: Timestamp::from_unix_millis(500),
                reason: FinishReason::Reconciled {
                    rule: "DEAD_OWNER_CLEAR".into(),
                },
                role: Some("goal".into()),
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "finished");
        assert_eq!(json["backend"], "local");
        assert_eq!(json["task_id"], "T-1");
        assert_eq!(json["reason"], "reconciled");
        assert_eq!(json["rule"], "DEAD_OWNER_CLEAR");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn denial_reads_well() {
        let denial = Denial {
            reason: DenyReason::BackendRateExceeded,
            window: Some(RateWindow::Hourly),
            current: 60,
            limit: 60,
        };
        assert_eq!(
            denial.to_string(),
            "backend_rate_exceeded (60 of 60 in the last hour)"
        );
    }

    #[test]
    fn a_finish_counts_in_the_field_its_reason_names() {
        for reason in [
            FinishReason::Completed,
            FinishReason::Failed,
            FinishReason::Interrupted,
            FinishReason::Reconciled { rule: "X".into() },
            FinishReason::ReleasedByOperator,
            FinishReason::Expired,
            FinishReason::Imported,
            FinishReason::NotStarted,
        ] {
            let mut attempts = TaskAttempts::default();
            attempts.record_finish(&reason);
            let json = serde_json::to_value(attempts).unwrap();
            let counted: Vec<_> = json
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, n)| n.as_u64() != Some(0))
                .map(|(field, _)| field.as_str())
                .collect();
            assert_eq!(counted, [reason.attempts_counter()], "{reason}");
        }
    }

    #[test]
    fn lost_attempts_count_only_unreported_endings() {
        let mut attempts = TaskAttempts::default();
        for reason in [
            FinishReason::Completed,
            FinishReason::Failed,
            FinishReason::Interrupted,
            FinishReason::Reconciled { rule: "X".into() },
            FinishReason::Expired,
            FinishReason::ReleasedByOperator,
        ] {
            attempts.record_finish(&reason);
        }
        assert_eq!(attempts.lost(), 3);
    }
}
