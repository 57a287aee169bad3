//! The traits at the edges of the rules, and the data that crosses them.
//!
//! The rules never touch a file, a socket or a process themselves: the
//! ledger, Plane and the operating system answer through these traits, so
//! every rule can be tested with mocks and every implementation lives in the
//! crate that owns its I/O.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ledger_core::{
    ExecutorIdentity, FinishOutcome, FinishReason, Owner, RunId, Slot, SlotKey, TaskId, Timestamp,
};

/// A boxed, sendable future with no borrowed state, as the async edge
/// methods return: `'static` so that the rules can run many at once.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A failure at an edge (the ledger, the process table, a lock), in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EdgeError(pub String);

impl EdgeError {
    /// Wraps any error's message.
    pub fn new(error: impl fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// The ledger, as the rules need it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait InFlightLedger: Send + Sync {
    /// The time leases are judged by: the store's own clock when it has
    /// one shared by every host, else `local`.
    fn now(&self, local: Timestamp) -> Result<Timestamp, EdgeError> {
        Ok(local)
    }

    /// Every open slot.
    fn open_slots(&self) -> Result<Vec<Slot>, EdgeError>;

    /// Closes `key`'s slot only if `run` still holds it. A slot that was
    /// finished or re-admitted since the scan read it is left alone and
    /// reported as such.
    fn finish_if_run(
        &self,
        key: &SlotKey,
        run: &RunId,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome, EdgeError>;
}

/// What is known about a slot owner's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The runner or its executor is running: the slot must not be touched.
    Alive,
    /// The owner ran on this host and neither its runner nor its executor is
    /// running any more (gone, pid reused, or the host rebooted).
    Dead {
        /// Why, for the action's reason.
        why: String,
    },
    /// The owner is not on this host (or was imported), so its processes
    /// cannot be checked from here.
    Unknown {
        /// Why, for the action's reason.
        why: String,
    },
}

/// What terminating a dead executor's process group found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateOutcome {
    /// Nothing of the group was running.
    NothingLeft,
    /// Survivors exited after SIGTERM.
    Terminated,
    /// Survivors ignored SIGTERM for the grace period and were SIGKILLed.
    Killed,
}

/// The operating system's process table, as the rules need it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait ProcessProbe: Send + Sync {
    /// Whether `owner`'s runner or executor is alive.
    fn liveness(&self, owner: &Owner) -> Liveness;

    /// Terminates whatever is left of a dead executor's process group
    /// (grandchildren the executor started): SIGTERM, a grace period,
    /// SIGKILL.
    fn terminate_group(&self, executor: &ExecutorIdentity) -> Result<TerminateOutcome, EdgeError>;
}

/// A task's state as the task source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The state's name (`Running`, `Done`, …).
    pub name: String,
    /// Its group (`started`, `completed`, `cancelled`, …).
    pub group: String,
    /// Whether the task is finished for good: group `completed` or
    /// `cancelled`, or a name the operator configured as terminal.
    pub terminal: bool,
}

/// The answer to looking up one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// The task exists, in this state.
    Found(TaskState),
    /// The task source answered that the task does not exist (deleted,
    /// archived or never existed). Not a route miss: that is an error.
    NotFound,
}

/// Why a lookup gave no answer. None of these is evidence about the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupErrorKind {
    /// 401: no credentials.
    Unauthorized,
    /// 403: bad key, wrong workspace or wrong project.
    Forbidden,
    /// 404 "Page not found.": the URL matched no route (configuration).
    RouteNotFound,
    /// 429.
    RateLimited,
    /// 5xx.
    Server,
    /// The request timed out.
    Timeout,
    /// The connection failed.
    Transport,
    /// The body was not what was expected.
    Decode,
    /// Anything else.
    Other,
}

/// A failed lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct LookupError {
    /// What kind of failure.
    pub kind: LookupErrorKind,
    /// In words.
    pub message: String,
}

impl LookupError {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: LookupErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What probing the project showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectSummary {
    /// How many work items the project's list holds.
    pub work_items: u64,
}

/// How many items one page of the project's work-item list holds.
pub const LIST_PAGE_SIZE: u64 = 1000;

impl ProjectSummary {
    /// Requests a full walk of the project's list costs (at least one).
    pub fn list_pages(&self) -> u64 {
        self.work_items.div_ceil(LIST_PAGE_SIZE).max(1)
    }
}

/// The task source (Plane), as the rules need it. Every call is one request
/// against a small budget, so the scan decides which to make.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TaskLookup: Send + Sync {
    /// Checks that the project itself answers, and how large it is. A
    /// "not found" for a task counts only when this succeeded in the same
    /// scan.
    fn probe_project(&self) -> BoxFuture<Result<ProjectSummary, LookupError>>;

    /// Looks up one task.
    fn task_status(&self, task: TaskId) -> BoxFuture<Result<TaskStatus, LookupError>>;

    /// Lists every work item of the project with its state (one request a
    /// page of [`LIST_PAGE_SIZE`]). Items missing from the list still need
    /// confirming one by one: the list leaves out archived and intake items.
    fn list_project(&self) -> BoxFuture<Result<Vec<(TaskId, TaskState)>, LookupError>>;
}

/// Proof that this process holds the start-up reconcile lock; dropping it
/// releases the lock.
pub struct LockToken(#[allow(dead_code)] Box<dyn Send>);

impl LockToken {
    /// Wraps whatever keeps the lock held.
    pub fn new(guard: impl Send + 'static) -> Self {
        Self(Box::new(guard))
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockToken")
    }
}

/// The lock that lets one process at a time sweep at start-up.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait StartupLock: Send + Sync {
    /// Tries to take the lock for up to `timeout`; `Ok(None)` when another
    /// process holds it.
    fn try_lock(&self, timeout: Duration) -> Result<Option<LockToken>, EdgeError>;
}
