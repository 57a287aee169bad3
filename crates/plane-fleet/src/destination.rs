//! Where a task goes on the board after its run or a reclaim: one pure
//! function every caller decides with (a run's report, the repair of a task
//! left in its running state, the requeue of a reclaimed task).

use inflight_config::RoleSettings;
use ledger_core::FinishReason;

/// Where a task goes after its run finished with `reason`, given the
/// attempts it has lost (including this one): done after success, blocked
/// after a failure or an expiry, and after an attempt that ended without
/// its executor's word (interrupted, reclaimed) back to the claim state,
/// unless the task has lost `max_attempts` of them. Every caller decides
/// with this one function: a run's report, the repair of a task left in
/// its running state, and the requeue of a reclaimed task.
pub fn destination<'a>(reason: &FinishReason, lost: u64, role: &'a RoleSettings) -> &'a str {
    match reason {
        FinishReason::Completed => &role.done_state,
        FinishReason::Failed | FinishReason::Expired => &role.blocked_state,
        _ if lost >= u64::from(role.max_attempts) => &role.blocked_state,
        _ => &role.claim_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> RoleSettings {
        RoleSettings {
            name: "goal".into(),
            claim_state: "Ready for AI".into(),
            running_state: "Running".into(),
            done_state: "Done".into(),
            blocked_state: "Blocked".into(),
            backend: ledger_core::Backend::new("local").unwrap(),
            labels: vec![],
            max_attempts: 3,
            api_key_env: None,
            parallel: 1,
        }
    }

    /// Where a task goes, as a table: the reason its run finished with and
    /// the attempts it has lost, against `max_attempts = 3`.
    #[test]
    fn where_a_task_goes_after_a_run_or_a_reclaim() {
        let role = role();
        let reclaimed = FinishReason::Reconciled {
            rule: "DEAD_OWNER_CLEAR".into(),
        };
        let rows = [
            (FinishReason::Completed, 0, "Done"),
            (FinishReason::Completed, 5, "Done"),
            (FinishReason::Failed, 0, "Blocked"),
            (FinishReason::Expired, 1, "Blocked"),
            (FinishReason::Interrupted, 1, "Ready for AI"),
            (FinishReason::Interrupted, 3, "Blocked"),
            (reclaimed.clone(), 2, "Ready for AI"),
            (reclaimed, 3, "Blocked"),
            (FinishReason::NotStarted, 0, "Ready for AI"),
        ];
        for (reason, lost, expected) in rows {
            assert_eq!(
                destination(&reason, lost, &role),
                expected,
                "{reason} after {lost} lost"
            );
        }
    }
}
