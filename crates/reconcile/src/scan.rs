//! One pass of the rules: gather what the decision needs through the traits,
//! spending Plane's small request budget carefully, decide, and apply.

use std::collections::{BTreeSet, HashMap};

use ledger_core::{FinishOutcome, FinishReason, TaskId, Timestamp};

use crate::decide::{Observations, ProjectEvidence, decide, foreign_project, needs_lookup};
use crate::join::bounded;
use crate::{
    Action, ActionEntry, ForeignSlot, InFlightLedger, LookupError, ProcessProbe, ProjectCheck,
    Rule, ScanOptions, ScanReport, TaskLookup, TaskStatus,
};

/// Why a scan could not run at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The ledger's open slots could not be read.
    #[error("could not read the open slots: {0}")]
    Ledger(crate::EdgeError),
}

/// Runs one pass of the rules over every open slot.
///
/// Plane is asked as little as possible: not at all when every slot is
/// settled by its owner's liveness; otherwise one project probe, then each
/// task id once (however many backends hold it), at most
/// `lookup_concurrency` at a time, or, when there are more ids than the
/// project list has pages, one walk of the list and a confirmation of only
/// the ids it lacks.
pub async fn scan(
    ledger: &dyn InFlightLedger,
    lookup: &dyn TaskLookup,
    probe: &dyn ProcessProbe,
    options: &ScanOptions,
    now: Timestamp,
) -> Result<ScanReport, ScanError> {
    // A store with a clock shared by every host (PostgreSQL's) judges
    // leases by it, not by this host's.
    let now = ledger.now(now).map_err(ScanError::Ledger)?;
    let slots = ledger.open_slots().map_err(ScanError::Ledger)?;
    let observed: Vec<_> = slots
        .into_iter()
        .map(|slot| {
            let liveness = probe.liveness(&slot.owner);
            (slot, liveness)
        })
        .collect();
    let wanted: BTreeSet<TaskId> = observed
        .iter()
        .filter(|(slot, liveness)| {
            needs_lookup(slot, liveness, options, now) && foreign_project(slot, options).is_none()
        })
        .map(|(slot, _)| slot.key.task_id.clone())
        .collect();

    let mut requests = 0u32;
    let (project, statuses) = if wanted.is_empty() {
        (ProjectEvidence::NotProbed, HashMap::new())
    } else {
        gather_statuses(lookup, wanted, options, &mut requests).await
    };
    let observations = Observations {
        slots: observed,
        project,
        statuses,
    };
    let plan = decide(&observations, options, now);
    for (slot, why) in &plan.left_alone {
        tracing::debug!(slot = %slot.key, run = %slot.run_id, why, "left alone");
    }
    if plan.suspected_misconfiguration {
        tracing::warn!(
            looked_up = observations.statuses.len(),
            "every looked-up task is unknown to Plane: suspect a wrong project or base URL; \
             nothing reclaimed on Plane's word"
        );
    }

    let project = match &observations.project {
        ProjectEvidence::NotProbed => ProjectCheck {
            checked: false,
            ok: true,
            error: None,
        },
        ProjectEvidence::Answered => ProjectCheck {
            checked: true,
            ok: true,
            error: None,
        },
        ProjectEvidence::Failed(e) => ProjectCheck {
            checked: true,
            ok: false,
            error: Some(e.to_string()),
        },
    };
    let lookups_failed = observations
        .statuses
        .values()
        .filter(|s| s.is_err())
        .count() as u32;
    let mut report = ScanReport {
        scanned_at: now,
        apply: options.apply,
        actions: Vec::with_capacity(plan.reclaims.len()),
        suspected_misconfiguration: plan.suspected_misconfiguration,
        open_slots: observations.slots.len(),
        plane_requests: requests,
        superseded: 0,
        project,
        lookups_failed,
        foreign_project: plan
            .foreign
            .iter()
            .map(|slot| ForeignSlot {
                task_id: slot.key.task_id.clone(),
                backend: slot.key.backend.clone(),
                project: slot
                    .owner
                    .project
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
            })
            .collect(),
    };
    if !report.foreign_project.is_empty() {
        tracing::info!(
            slots = report.foreign_project.len(),
            "slots admitted under another project were left alone"
        );
    }
    for reclaim in plan.reclaims {
        let mut entry = ActionEntry {
            task_id: reclaim.slot.key.task_id.clone(),
            backend: reclaim.slot.key.backend.clone(),
            started_at: reclaim.slot.started_at,
            rule: reclaim.rule,
            reason: reclaim.reason,
            action: Action::WouldApply,
            error: None,
            run_id: reclaim.slot.run_id.clone(),
            role: reclaim.slot.owner.role.clone(),
            task_state: reclaim.task_state,
        };
        if !options.apply {
            report.actions.push(entry);
            continue;
        }
        match apply(ledger, probe, &reclaim.slot, reclaim.rule, now) {
            Ok(true) => {
                entry.action = Action::Applied;
                tracing::info!(slot = %reclaim.slot.key, run = %reclaim.slot.run_id, rule = %reclaim.rule, reason = %entry.reason, "reclaimed");
                report.actions.push(entry);
            }
            Ok(false) => report.superseded += 1,
            Err(error) => {
                tracing::error!(slot = %reclaim.slot.key, run = %reclaim.slot.run_id, rule = %reclaim.rule, %error, "could not reclaim");
                entry.action = Action::Error;
                entry.error = Some(error);
                report.actions.push(entry);
            }
        }
    }
    Ok(report)
}

/// Reclaims one slot. `Ok(false)`: the slot changed since the scan.
fn apply(
    ledger: &dyn InFlightLedger,
    probe: &dyn ProcessProbe,
    slot: &ledger_core::Slot,
    rule: Rule,
    now: Timestamp,
) -> Result<bool, String> {
    // Grandchildren the executor started may outlive it; the slot is
    // released only once nothing of its process group runs, or the backend
    // would be over its cap.
    if rule == Rule::DeadOwnerClear
        && let Some(executor) = &slot.owner.executor
    {
        let outcome = probe
            .terminate_group(executor)
            .map_err(|e| format!("could not terminate the executor's process group: {e}"))?;
        tracing::debug!(slot = %slot.key, ?outcome, "executor process group");
    }
    let reason = FinishReason::Reconciled {
        rule: rule.as_str().to_owned(),
    };
    match ledger.finish_if_run(&slot.key, &slot.run_id, reason, now) {
        Ok(FinishOutcome::Finished(_)) => Ok(true),
        Ok(FinishOutcome::NotInFlight | FinishOutcome::OtherRunInFlight { .. }) => {
            tracing::info!(slot = %slot.key, run = %slot.run_id, "slot changed since the scan; left alone");
            Ok(false)
        }
        Err(e) => Err(format!("could not finish the slot: {e}")),
    }
}

type Statuses = HashMap<TaskId, Result<TaskStatus, LookupError>>;

async fn gather_statuses(
    lookup: &dyn TaskLookup,
    wanted: BTreeSet<TaskId>,
    options: &ScanOptions,
    requests: &mut u32,
) -> (ProjectEvidence, Statuses) {
    *requests += 1;
    let summary = match lookup.probe_project().await {
        Ok(summary) => summary,
        Err(e) => {
            tracing::warn!(error = %e, "the project did not answer; no task looked up");
            return (ProjectEvidence::Failed(e), HashMap::new());
        }
    };
    let mut statuses = Statuses::new();
    let mut to_confirm: Vec<TaskId> = wanted.iter().cloned().collect();
    if wanted.len() as u64 > summary.list_pages() {
        *requests += summary.list_pages() as u32;
        match lookup.list_project().await {
            Ok(items) => {
                for (task, state) in items {
                    if wanted.contains(&task) {
                        statuses.insert(task, Ok(TaskStatus::Found(state)));
                    }
                }
                to_confirm.retain(|task| !statuses.contains_key(task));
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing the project failed; looking tasks up one by one")
            }
        }
    }
    *requests += to_confirm.len() as u32;
    let answers = bounded(to_confirm.clone(), options.lookup_concurrency, |task| {
        lookup.task_status(task)
    })
    .await;
    statuses.extend(to_confirm.into_iter().zip(answers));
    (ProjectEvidence::Answered, statuses)
}
