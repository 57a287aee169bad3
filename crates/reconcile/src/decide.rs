//! The decision itself: a pure function from what was observed to what to
//! reclaim. No traits, no I/O, no clock: everything it needs is an argument,
//! so every safety property can be checked with plain data.

use std::collections::HashMap;

use ledger_core::{Owner, ProjectRef, Slot, TaskId, Timestamp};

use crate::{Liveness, LookupError, Rule, ScanOptions, TaskState, TaskStatus};

/// What the scan learnt about the project before looking up its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectEvidence {
    /// No task needed a lookup, so the project was not probed.
    NotProbed,
    /// The project answered: a "not found" for one of its tasks is credible.
    Answered,
    /// The project did not answer; no lookup was made.
    Failed(LookupError),
}

/// Everything a decision is taken from.
#[derive(Debug, Clone)]
pub struct Observations {
    /// Each open slot with its owner's liveness.
    pub slots: Vec<(Slot, Liveness)>,
    /// The project probe.
    pub project: ProjectEvidence,
    /// One answer per looked-up task id.
    pub statuses: HashMap<TaskId, Result<TaskStatus, LookupError>>,
}

/// A slot to reclaim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaim {
    /// The slot as the scan read it.
    pub slot: Slot,
    /// The first rule that matched it.
    pub rule: Rule,
    /// Why, in words.
    pub reason: String,
    /// The task's state, when it was looked up.
    pub task_state: Option<TaskState>,
}

/// What to reclaim, and why the rest stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Slots to reclaim, in the order the slots were given.
    pub reclaims: Vec<Reclaim>,
    /// Slots left alone, with why.
    pub left_alone: Vec<(Slot, String)>,
    /// Of those, the slots admitted under another project than the scan's
    /// (see [`foreign_project`]).
    pub foreign: Vec<Slot>,
    /// See [`crate::ScanReport::suspected_misconfiguration`].
    pub suspected_misconfiguration: bool,
}

/// Whether a slot whose owner has this liveness needs its task looked up:
/// only when no rule can settle it without Plane.
pub fn needs_lookup(
    slot: &Slot,
    liveness: &Liveness,
    options: &ScanOptions,
    now: Timestamp,
) -> bool {
    matches!(liveness, Liveness::Unknown { .. })
        && lease_expired(slot, liveness, options, now).is_none()
}

/// Why a slot's lease counts as abandoned: its owner is on another host
/// (so this host cannot check its processes), was not imported (imported
/// slots have no lease anyone renews), and its lease ended more than
/// `lease_grace` ago by the store's clock.
pub fn lease_expired(
    slot: &Slot,
    liveness: &Liveness,
    options: &ScanOptions,
    now: Timestamp,
) -> Option<String> {
    let Liveness::Unknown { why } = liveness else {
        return None;
    };
    if slot.owner.host == Owner::IMPORTED_HOST
        || now <= slot.lease_until.saturating_add(options.lease_grace)
    {
        return None;
    }
    Some(format!(
        "its lease ran out {}s ago (grace {}s): the holder stopped renewing; {why}",
        now.duration_since(slot.lease_until).as_secs(),
        options.lease_grace.as_secs()
    ))
}

/// The project a slot was admitted under, when it is not the one the scan
/// is configured for. Such a slot is left alone by every rule and never
/// looked up: another project's answers say nothing about its task (a task
/// id is "not found" in every project but its own), and its task could not
/// be put back on this project's board. Slots that recorded no project
/// (imported, or written before projects were recorded) are judged as
/// before, under the misconfiguration guard.
pub fn foreign_project<'a>(slot: &'a Slot, options: &ScanOptions) -> Option<&'a ProjectRef> {
    match (&slot.owner.project, &options.project) {
        (Some(recorded), Some(configured)) if recorded != configured => Some(recorded),
        _ => None,
    }
}

/// Decides, for each slot, whether a rule reclaims it. Rules are checked in
/// order and the first match wins; the safety properties hold by
/// construction:
///
/// 1. a slot whose owner is alive is never reclaimed;
/// 2. only a confirmed "not found" or a terminal state counts as Plane's
///    word, and any failed lookup leaves the slot alone;
/// 3. "not found" counts only when the project answered, and not at all when
///    every looked-up task (at least the threshold's worth) is "not found".
pub fn decide(observed: &Observations, options: &ScanOptions, now: Timestamp) -> Plan {
    let looked_up = observed.statuses.len();
    let all_not_found = looked_up > 0
        && observed
            .statuses
            .values()
            .all(|s| matches!(s, Ok(TaskStatus::NotFound)));
    let suspected_misconfiguration =
        all_not_found && looked_up >= options.misconfiguration_threshold;
    let not_found_is_credible =
        observed.project == ProjectEvidence::Answered && !suspected_misconfiguration;

    let mut plan = Plan {
        suspected_misconfiguration,
        ..Plan::default()
    };
    for (slot, liveness) in &observed.slots {
        if let Some(project) = foreign_project(slot, options) {
            let configured = options
                .project
                .as_ref()
                .map_or_else(String::new, ToString::to_string);
            plan.left_alone.push((
                slot.clone(),
                format!(
                    "admitted under project {project}, not {configured} that this scan is configured for"
                ),
            ));
            plan.foreign.push(slot.clone());
            continue;
        }
        let verdict = match liveness {
            Liveness::Alive => Err("its owner is alive".to_owned()),
            Liveness::Dead { why } => match &slot.owner.outcome {
                None => Ok((Rule::DeadOwnerClear, why.clone(), None)),
                Some(outcome) => recorded_outcome(slot, outcome, options, now),
            },
            Liveness::Unknown { why } => match lease_expired(slot, liveness, options, now) {
                Some(reason) => Ok((Rule::LeaseExpiredClear, reason, None)),
                None => judge_by_plane(slot, why, observed, not_found_is_credible, options, now),
            },
        };
        match verdict {
            Ok((rule, reason, task_state)) => plan.reclaims.push(Reclaim {
                slot: slot.clone(),
                rule,
                reason,
                task_state,
            }),
            Err(why) => plan.left_alone.push((slot.clone(), why)),
        }
    }
    plan
}

type Verdict = Result<(Rule, String, Option<TaskState>), String>;

/// A slot whose keeper recorded how its executor ended before it exited:
/// the run is over and its outcome waits for a runner of its role to report
/// it (moving the task and finishing the slot), so it is never reclaimed as
/// a dead owner's. Only one left unreported past the window expires, as any
/// stale slot does.
fn recorded_outcome(
    slot: &Slot,
    outcome: &ledger_core::RunOutcome,
    options: &ScanOptions,
    now: Timestamp,
) -> Verdict {
    let age = now.duration_since(slot.started_at);
    if age > options.window {
        return Ok((
            Rule::StaleInFlightExpire,
            format!(
                "started {} ago, past the {} window; its keeper recorded its outcome ({:?}) and no runner reported it",
                hours(age),
                hours(options.window),
                outcome.ending
            ),
            None,
        ));
    }
    Err("its keeper recorded the run's outcome; a runner of its role reports it".to_owned())
}

fn judge_by_plane(
    slot: &Slot,
    owner_why: &str,
    observed: &Observations,
    not_found_is_credible: bool,
    options: &ScanOptions,
    now: Timestamp,
) -> Verdict {
    let status = match observed.statuses.get(&slot.key.task_id) {
        Some(Ok(status)) => status,
        Some(Err(e)) => return Err(format!("its lookup failed ({e})")),
        None => {
            return Err(match &observed.project {
                ProjectEvidence::Failed(e) => format!("the project did not answer ({e})"),
                _ => "its task was not looked up".to_owned(),
            });
        }
    };
    match status {
        TaskStatus::Found(state) if state.terminal => Ok((
            Rule::OrphanedInFlightClear,
            format!(
                "task is terminal in Plane (state {:?}, group {}); {owner_why}",
                state.name, state.group
            ),
            Some(state.clone()),
        )),
        TaskStatus::NotFound if not_found_is_credible => Ok((
            Rule::OrphanedInFlightClear,
            format!("task not found in Plane while its project answers; {owner_why}"),
            None,
        )),
        TaskStatus::NotFound if observed.project != ProjectEvidence::Answered => {
            Err("Plane says not found, but the project did not answer".to_owned())
        }
        TaskStatus::NotFound => {
            Err("Plane says not found, as for every task: suspected misconfiguration".to_owned())
        }
        TaskStatus::Found(state) => {
            let age = now.duration_since(slot.started_at);
            if age > options.window {
                Ok((
                    Rule::StaleInFlightExpire,
                    format!(
                        "started {} ago, past the {} window, task still {:?} in Plane; {owner_why}",
                        hours(age),
                        hours(options.window),
                        state.name
                    ),
                    Some(state.clone()),
                ))
            } else {
                Err(format!(
                    "task is {:?} in Plane and the slot is within its window",
                    state.name
                ))
            }
        }
    }
}

fn hours(d: std::time::Duration) -> String {
    let h = d.as_secs_f64() / 3600.0;
    if h >= 10.0 {
        format!("{h:.0}h")
    } else {
        format!("{h:.1}h")
    }
}
