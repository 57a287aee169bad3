//! What a scan reports: one action entry per reclaimed (or reclaimable)
//! slot, in the reference watchdog's shape so its log consumers keep
//! working.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use ledger_core::{Backend, ProjectRef, RunId, TaskId, Timestamp};

use crate::TaskState;

/// The orphan rules, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The owner ran on this host and none of its processes is alive.
    DeadOwnerClear,
    /// The task is gone from Plane or terminal there.
    OrphanedInFlightClear,
    /// The slot is older than the window and its owner is not known alive.
    StaleInFlightExpire,
    /// The owner is on another host (its processes cannot be checked from
    /// here) and its lease ran out more than the grace ago, by the store's
    /// clock: its holder stopped renewing, and stops its own executor
    /// before its lease runs out when it cannot renew.
    LeaseExpiredClear,
}

impl Rule {
    /// The rule's name as logs and the ledger record it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DeadOwnerClear => "DEAD_OWNER_CLEAR",
            Rule::OrphanedInFlightClear => "ORPHANED_IN_FLIGHT_CLEAR",
            Rule::StaleInFlightExpire => "STALE_IN_FLIGHT_EXPIRE",
            Rule::LeaseExpiredClear => "LEASE_EXPIRED_CLEAR",
        }
    }
}

impl Rule {
    /// Every rule, in the order they are checked.
    pub const ALL: [Rule; 4] = [
        Rule::DeadOwnerClear,
        Rule::OrphanedInFlightClear,
        Rule::StaleInFlightExpire,
        Rule::LeaseExpiredClear,
    ];

    /// The rule the ledger records as `name`.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.as_str() == name)
    }

    /// Why a slot this rule reclaims was reclaimed, for an operator.
    pub fn meaning(self) -> &'static str {
        match self {
            Rule::DeadOwnerClear => {
                "its holder ran on this host and neither the holder nor its executor was alive"
            }
            Rule::OrphanedInFlightClear => "its Plane task was not found or in a terminal state",
            Rule::StaleInFlightExpire => {
                "it was older than the ledger's window and its holder was not known alive"
            }
            Rule::LeaseExpiredClear => {
                "its holder, on another host, stopped renewing its lease and the lease ran out"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What happened to a slot a rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The slot was reclaimed.
    Applied,
    /// A dry run: the slot would have been reclaimed.
    WouldApply,
    /// Reclaiming failed; see the entry's `error`.
    Error,
}

/// One slot a rule matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionEntry {
    /// The task.
    pub task_id: TaskId,
    /// The backend whose slot it was.
    pub backend: Backend,
    /// When the slot was admitted, RFC 3339.
    #[serde(serialize_with = "rfc3339")]
    pub started_at: Timestamp,
    /// The rule that matched.
    pub rule: Rule,
    /// Why, in words.
    pub reason: String,
    /// What was done.
    pub action: Action,
    /// The failure, for `action: error` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run that held the slot (not part of the JSON shape).
    #[serde(skip)]
    pub run_id: RunId,
    /// The role of the runner that held it, if recorded (not part of the
    /// JSON shape): where a reclaimed task goes back to.
    #[serde(skip)]
    pub role: Option<String>,
    /// The task's state in Plane when the scan looked it up (not part of the
    /// JSON shape): the runner uses it to put a still-running task back.
    #[serde(skip)]
    pub task_state: Option<TaskState>,
}

fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// The result of one pass of the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// When the scan ran, RFC 3339.
    #[serde(serialize_with = "rfc3339")]
    pub scanned_at: Timestamp,
    /// Whether reclaims were applied (`false`: a dry run).
    pub apply: bool,
    /// One entry per slot a rule matched.
    pub actions: Vec<ActionEntry>,
    /// Every looked-up task was "not found" and there were enough of them to
    /// suspect a wrong project or base URL: nothing was reclaimed on Plane's
    /// word.
    pub suspected_misconfiguration: bool,
    /// Open slots the scan saw.
    pub open_slots: usize,
    /// Requests made to Plane.
    pub plane_requests: u32,
    /// Slots a rule matched but that changed between the scan and the apply
    /// (finished, or re-admitted by a new run): left alone.
    pub superseded: u32,
    /// Whether the project answered the scan's probe.
    pub project: ProjectCheck,
    /// Task lookups that gave no answer (403, 429, 5xx, timeouts, …): their
    /// slots were left alone, and the scan is incomplete.
    pub lookups_failed: u32,
    /// Slots admitted under another project than the scan's, left alone.
    pub foreign_project: Vec<ForeignSlot>,
}

impl ScanReport {
    /// What went wrong, if anything: the project did not answer, a lookup
    /// failed, or a reclaim could not be applied. A scan with a failure
    /// exits with status 1, so that a wrong key or a dead Plane is never
    /// reported as success.
    pub fn failure(&self) -> Option<String> {
        let mut problems = Vec::new();
        if let Some(error) = &self.project.error {
            problems.push(format!("the project did not answer: {error}"));
        }
        if self.lookups_failed > 0 {
            problems.push(format!("{} task lookup(s) failed", self.lookups_failed));
        }
        let errors = self
            .actions
            .iter()
            .filter(|a| a.action == Action::Error)
            .count();
        if errors > 0 {
            problems.push(format!("{errors} reclaim(s) could not be applied"));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// What the scan learnt of the project itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProjectCheck {
    /// Whether the project was probed (it is not when no slot needs a
    /// lookup: such a scan asks Plane nothing).
    pub checked: bool,
    /// Whether it answered (true when it was not probed).
    pub ok: bool,
    /// Why it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A slot admitted under another project than the scan's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignSlot {
    /// The task.
    pub task_id: TaskId,
    /// The backend.
    pub backend: Backend,
    /// `workspace/project_id` it was admitted under.
    pub project: String,
}

/// How a scan runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// Reclaim (`true`) or only report (`false`).
    pub apply: bool,
    /// Slots older than this whose owner is not known alive expire.
    pub window: Duration,
    /// Lookups in flight at once.
    pub lookup_concurrency: usize,
    /// At least this many looked-up tasks, all "not found", is taken for a
    /// misconfiguration rather than mass deletion.
    pub misconfiguration_threshold: usize,
    /// The project the scan looks tasks up in. Slots that recorded another
    /// project are left alone; `None` judges every slot.
    pub project: Option<ProjectRef>,
    /// How long past its lease's end a slot of another host's owner is
    /// left alone before `LEASE_EXPIRED_CLEAR` reclaims it.
    pub lease_grace: Duration,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            apply: false,
            window: Duration::from_secs(24 * 3600),
            lookup_concurrency: 8,
            misconfiguration_threshold: 3,
            project: None,
            lease_grace: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_found_by_the_name_the_ledger_records() {
        for rule in Rule::ALL {
            assert_eq!(Rule::from_name(rule.as_str()), Some(rule));
        }
        assert_eq!(Rule::from_name("NO_SUCH_RULE"), None);
    }
}
