//! Which role takes a task on the board, and where a task goes after its
//! run or a reclaim: pure functions every caller decides with (a runner's
//! look at the board, `watchdog explain`; a run's report, the repair of a
//! task left in its running state, the requeue of a reclaimed task).

use inflight_config::RoleSettings;
use ledger_core::FinishReason;
use plane_client::same_name;

/// What a role makes of a task on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleFit {
    /// In the role's claim state with every label of its filter: the role
    /// claims it.
    Claims,
    /// In the role's running state with every label of its filter: a run
    /// of the role's, or one left there.
    Running,
    /// In the role's claim or running state, without these labels of its
    /// filter (in the filter's order): not the role's.
    MissingLabels(Vec<String>),
    /// In another state: not the role's.
    OtherState,
}

/// What `role` makes of a task in the state named `state` that carries the
/// labels for which `carries(label name)` is true. Names compare as Plane's
/// do, trimmed and case-insensitively.
pub fn role_fit(role: &RoleSettings, state: &str, carries: impl Fn(&str) -> bool) -> RoleFit {
    let claims = same_name(state, &role.claim_state);
    if !claims && !same_name(state, &role.running_state) {
        return RoleFit::OtherState;
    }
    let missing: Vec<String> = role
        .labels
        .iter()
        .filter(|name| !carries(name))
        .cloned()
        .collect();
    match (missing.is_empty(), claims) {
        (false, _) => RoleFit::MissingLabels(missing),
        (true, true) => RoleFit::Claims,
        (true, false) => RoleFit::Running,
    }
}

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

    #[test]
    fn a_role_claims_a_task_in_its_claim_state_with_every_label_of_its_filter() {
        let mut role = role();
        role.labels = vec!["agent".into(), "rust".into()];
        let has = |labels: &'static [&'static str]| move |name: &str| labels.contains(&name);
        assert_eq!(
            role_fit(&role, "Ready for AI", has(&["agent", "rust"])),
            RoleFit::Claims
        );
        assert_eq!(
            role_fit(&role, " ready FOR ai ", has(&["rust", "agent", "x"])),
            RoleFit::Claims
        );
        assert_eq!(
            role_fit(&role, "Ready for AI", has(&["rust"])),
            RoleFit::MissingLabels(vec!["agent".into()])
        );
        assert_eq!(
            role_fit(&role, "Running", has(&["agent", "rust"])),
            RoleFit::Running
        );
        assert_eq!(
            role_fit(&role, "Done", has(&["agent", "rust"])),
            RoleFit::OtherState
        );
        role.labels.clear();
        assert_eq!(role_fit(&role, "Ready for AI", has(&[])), RoleFit::Claims);
    }

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
