//! Plane, as the orphan rules and the runners use it: the [`Plane`] trait
//! (the calls they make, which [`PlaneClient`] answers over HTTP), the
//! `TaskLookup` adapter over it, and putting a reclaimed task back on the
//! board.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::{FinishReason, LedgerStore, TaskId};
use plane_client::{
    Label, PlaneClient, PlaneError, State, StateLite, StateRef, WorkItem, same_name,
};
use reconcile::{
    Action, ActionEntry, BoxFuture, LookupError, LookupErrorKind, ProjectSummary, TaskLookup,
    TaskState, TaskStatus,
};

use inflight_config::{Config, RoleSettings};

/// A Plane call in flight.
pub type PlaneFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PlaneError>> + Send + 'a>>;

/// The Plane project as the runner, the watchdog and the rules use it: the
/// edge that lets them run against something other than a server (an
/// in-memory board under tokio's paused clock, in tests). [`PlaneClient`]
/// is the implementation that talks to Plane; see its methods for what each
/// call means, how it is paced and cached, and how it fails.
pub trait Plane: Send + Sync + std::fmt::Debug {
    /// The project answers, and how many work items it lists.
    fn probe_project(&self) -> PlaneFuture<'_, u64>;
    /// One work item.
    fn get_work_item<'a>(&'a self, id: &'a str) -> PlaneFuture<'a, WorkItem>;
    /// The project's identifier (`ROCK` of `ROCK-42`).
    fn project_identifier(&self) -> PlaneFuture<'_, String>;
    /// The work item a person calls `ROCK-42`.
    fn work_item_by_identifier<'a>(&'a self, identifier: &'a str) -> PlaneFuture<'a, WorkItem>;
    /// Every work item of the project.
    fn list_work_items(&self) -> PlaneFuture<'_, Vec<WorkItem>>;
    /// Every work item of the project, each with its state expanded (no
    /// state list needed to name it).
    fn list_work_item_states(&self) -> PlaneFuture<'_, Vec<WorkItem>>;
    /// The project's states, cached.
    fn states(&self) -> PlaneFuture<'_, Arc<Vec<State>>>;
    /// The project's states, listed again.
    fn refresh_states(&self) -> PlaneFuture<'_, Arc<Vec<State>>>;
    /// The project's labels, cached.
    fn labels(&self) -> PlaneFuture<'_, Arc<Vec<Label>>>;
    /// The project's labels, listed again.
    fn refresh_labels(&self) -> PlaneFuture<'_, Arc<Vec<Label>>>;
    /// How long ago the labels were listed (`None`: never).
    fn labels_age(&self) -> Option<Duration>;
    /// Moves a work item to the state named `state`.
    fn set_state<'a>(&'a self, id: &'a str, state: &'a str) -> PlaneFuture<'a, ()>;
    /// Posts an HTML comment on a work item.
    fn post_comment<'a>(&'a self, id: &'a str, html: &'a str) -> PlaneFuture<'a, ()>;
    /// Whether a state means the task is finished for good.
    fn is_terminal(&self, state: &StateLite) -> bool;
}

impl Plane for PlaneClient {
    fn probe_project(&self) -> PlaneFuture<'_, u64> {
        Box::pin(async { Ok(PlaneClient::probe_project(self).await?.total_work_items) })
    }
    fn get_work_item<'a>(&'a self, id: &'a str) -> PlaneFuture<'a, WorkItem> {
        Box::pin(PlaneClient::get_work_item(self, id))
    }
    fn project_identifier(&self) -> PlaneFuture<'_, String> {
        Box::pin(async { Ok(self.get_project().await?.identifier) })
    }
    fn work_item_by_identifier<'a>(&'a self, identifier: &'a str) -> PlaneFuture<'a, WorkItem> {
        Box::pin(self.get_work_item_by_identifier(identifier))
    }
    fn list_work_items(&self) -> PlaneFuture<'_, Vec<WorkItem>> {
        Box::pin(PlaneClient::list_work_items(self))
    }
    fn list_work_item_states(&self) -> PlaneFuture<'_, Vec<WorkItem>> {
        Box::pin(PlaneClient::list_work_item_states(self))
    }
    fn states(&self) -> PlaneFuture<'_, Arc<Vec<State>>> {
        Box::pin(PlaneClient::states(self))
    }
    fn refresh_states(&self) -> PlaneFuture<'_, Arc<Vec<State>>> {
        Box::pin(PlaneClient::refresh_states(self))
    }
    fn labels(&self) -> PlaneFuture<'_, Arc<Vec<Label>>> {
        Box::pin(PlaneClient::labels(self))
    }
    fn refresh_labels(&self) -> PlaneFuture<'_, Arc<Vec<Label>>> {
        Box::pin(PlaneClient::refresh_labels(self))
    }
    fn labels_age(&self) -> Option<Duration> {
        PlaneClient::labels_age(self)
    }
    fn set_state<'a>(&'a self, id: &'a str, state: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(async move { PlaneClient::set_state(self, id, state).await.map(drop) })
    }
    fn post_comment<'a>(&'a self, id: &'a str, html: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(async move { PlaneClient::post_comment(self, id, html).await.map(drop) })
    }
    fn is_terminal(&self, state: &StateLite) -> bool {
        PlaneClient::is_terminal(self, state)
    }
}

/// A [`Plane`] as the rules see it.
#[derive(Debug, Clone)]
pub struct PlaneLookup(pub Arc<dyn Plane>);

/// Maps the client's error onto the rules' vocabulary. Only `NotFound` is
/// evidence, and it is not an error at all: see [`PlaneLookup`].
pub fn lookup_error(error: PlaneError) -> LookupError {
    let kind = match &error {
        PlaneError::Unauthorized { .. } => LookupErrorKind::Unauthorized,
        PlaneError::Forbidden { .. } => LookupErrorKind::Forbidden,
        PlaneError::RouteNotFound { .. } | PlaneError::NoPlaneApi { .. } => {
            LookupErrorKind::RouteNotFound
        }
        PlaneError::RateLimited { .. } => LookupErrorKind::RateLimited,
        PlaneError::Server { .. } => LookupErrorKind::Server,
        PlaneError::Timeout { .. } => LookupErrorKind::Timeout,
        PlaneError::Transport { .. } => LookupErrorKind::Transport,
        PlaneError::Decode { .. } | PlaneError::TooLarge { .. } => LookupErrorKind::Decode,
        _ => LookupErrorKind::Other,
    };
    LookupError::new(kind, error.to_string())
}

/// The state of `item` as the four-key object, resolving a bare id through
/// the (cached) state list.
pub async fn state_of(plane: &dyn Plane, item: &WorkItem) -> Result<StateLite, PlaneError> {
    match &item.state {
        StateRef::Expanded(state) => Ok(state.clone()),
        StateRef::Id(id) => {
            let find = |states: &[plane_client::State]| {
                states.iter().find(|s| &s.id == id).map(|s| StateLite {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    group: s.group.clone(),
                })
            };
            if let Some(state) = find(&plane.states().await?) {
                return Ok(state);
            }
            find(&plane.refresh_states().await?).ok_or_else(|| PlaneError::UnknownState {
                name: id.clone(),
                available: "(not in the project's state list)".into(),
            })
        }
    }
}

fn task_state(plane: &dyn Plane, state: &StateLite) -> TaskState {
    TaskState {
        name: state.name.clone(),
        group: state.group.as_str().to_owned(),
        terminal: plane.is_terminal(state),
    }
}

impl TaskLookup for PlaneLookup {
    fn probe_project(&self) -> BoxFuture<Result<ProjectSummary, LookupError>> {
        let plane = self.0.clone();
        Box::pin(async move {
            plane
                .probe_project()
                .await
                .map(|work_items| ProjectSummary { work_items })
                .map_err(lookup_error)
        })
    }

    fn task_status(&self, task: TaskId) -> BoxFuture<Result<TaskStatus, LookupError>> {
        let plane = self.0.clone();
        Box::pin(async move {
            match plane.get_work_item(task.as_str()).await {
                Ok(item) => {
                    let state = state_of(&*plane, &item).await.map_err(lookup_error)?;
                    Ok(TaskStatus::Found(task_state(&*plane, &state)))
                }
                Err(PlaneError::NotFound { .. }) => Ok(TaskStatus::NotFound),
                Err(e) => Err(lookup_error(e)),
            }
        })
    }

    fn list_project(&self) -> BoxFuture<Result<Vec<(TaskId, TaskState)>, LookupError>> {
        let plane = self.0.clone();
        Box::pin(async move {
            // States expanded: naming them costs no state list, so the
            // scan's count of requests (a page each) is what was sent.
            let items = plane.list_work_item_states().await.map_err(lookup_error)?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Ok(id) = TaskId::new(item.id.clone()) else {
                    continue;
                };
                let state = state_of(&*plane, &item).await.map_err(lookup_error)?;
                out.push((id, task_state(&*plane, &state)));
            }
            Ok(out)
        })
    }
}

/// A name in a role's configuration that the Plane project does not have:
/// a state (misspelt, renamed or deleted) or a label (not created yet, or
/// deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleProblem {
    /// The configuration key, e.g. `roles.goal.running_state`.
    pub key: String,
    /// The name configured there.
    pub name: String,
    /// `state` or `label`.
    pub kind: &'static str,
    /// The names the project has, in Plane's order.
    pub available: Vec<String>,
}

impl std::fmt::Display for RoleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} = {:?}: the Plane project has no {} of that name ({}s: {})",
            self.key,
            self.name,
            self.kind,
            self.kind,
            if self.available.is_empty() {
                "none".to_owned()
            } else {
                self.available.join(", ")
            }
        )
    }
}

/// Checks a role's four state names and its labels against the project
/// (trimmed, case-insensitive, as they are matched). Uses the client's
/// cached states and labels, so it costs a request only when they are
/// loaded for the first time or have expired.
pub async fn check_role(
    plane: &dyn Plane,
    role: &RoleSettings,
) -> Result<Vec<RoleProblem>, PlaneError> {
    let mut problems = Vec::new();
    let states = plane.states().await?;
    for (field, name) in [
        ("claim_state", &role.claim_state),
        ("running_state", &role.running_state),
        ("done_state", &role.done_state),
        ("blocked_state", &role.blocked_state),
    ] {
        if !states.iter().any(|s| same_name(&s.name, name)) {
            problems.push(RoleProblem {
                key: format!("roles.{}.{field}", role.name),
                name: name.clone(),
                kind: "state",
                available: states.iter().map(|s| s.name.clone()).collect(),
            });
        }
    }
    if !role.labels.is_empty() {
        let labels = plane.labels().await?;
        for name in &role.labels {
            if !labels.iter().any(|l| same_name(&l.name, name)) {
                problems.push(RoleProblem {
                    key: format!("roles.{}.labels", role.name),
                    name: name.clone(),
                    kind: "label",
                    available: labels.iter().map(|l| l.name.clone()).collect(),
                });
            }
        }
    }
    Ok(problems)
}

/// Escapes text for a Plane comment's HTML.
pub fn html_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            c if c.is_control() && c != '\n' => " ".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// What happened to a reclaimed task on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Moved back to its role's claim state.
    BackToClaim {
        /// The task.
        task: TaskId,
        /// The state it went to.
        state: String,
    },
    /// It had used its `max_attempts`: moved to the blocked state.
    Blocked {
        /// The task.
        task: TaskId,
        /// The state it went to.
        state: String,
    },
    /// Left where it is (not in a started state, role unknown, or Plane
    /// failed), with why.
    Left {
        /// The task.
        task: TaskId,
        /// Why.
        why: String,
    },
}

/// Puts the tasks of reclaimed slots that are still in a started state in
/// Plane back into their role's claim state, with a comment; a task whose
/// attempts ended without a report `max_attempts` times goes to the blocked
/// state instead, so a task that kills its runner cannot loop forever.
pub async fn requeue_reclaimed(
    plane: &dyn Plane,
    ledger: &Arc<impl LedgerStore + ?Sized + 'static>,
    config: &Config,
    actions: &[ActionEntry],
) -> Vec<Requeue> {
    let mut outcomes = Vec::new();
    for action in actions.iter().filter(|a| a.action == Action::Applied) {
        let task = action.task_id.clone();
        let left = |why: String| Requeue::Left {
            task: task.clone(),
            why,
        };
        let Some(role) = action.role.as_deref().and_then(|r| config.roles.get(r)) else {
            outcomes.push(left(
                "the slot's role is not known to this configuration".into(),
            ));
            continue;
        };
        let group = match &action.task_state {
            Some(state) => state.group.clone(),
            None => match plane.get_work_item(task.as_str()).await {
                Ok(item) => match state_of(plane, &item).await {
                    Ok(state) => state.group.as_str().to_owned(),
                    Err(e) => {
                        outcomes.push(left(format!("its state could not be read: {e}")));
                        continue;
                    }
                },
                Err(e) => {
                    outcomes.push(left(format!("it could not be read: {e}")));
                    continue;
                }
            },
        };
        if group != "started" {
            outcomes.push(left(format!("it is in a {group} state, not a started one")));
            continue;
        }
        // An unreadable count is not zero: leave the task rather than loop
        // it through a claim it may already have used up.
        let counted = task.clone();
        let lost = match crate::on_store(ledger, move |s| s.attempts(&counted)).await {
            Ok(attempts) => attempts.lost(),
            Err(e) => {
                outcomes.push(left(format!("its attempts could not be read: {e}")));
                continue;
            }
        };
        let reason = FinishReason::Reconciled {
            rule: action.rule.to_string(),
        };
        let target = crate::destination(&reason, lost, role);
        let blocked = target != role.claim_state;
        let comment = format!(
            "<p>inflight: run {} on backend {} was reclaimed by {} ({}). Attempts lost so far: {lost} of {}. {}</p>",
            html_escape(action.run_id.as_str()),
            html_escape(action.backend.as_str()),
            action.rule,
            html_escape(&action.reason),
            role.max_attempts,
            if blocked {
                format!("Moved to {} for a person to look at.", html_escape(target))
            } else {
                format!("Moved back to {} to be claimed again.", html_escape(target))
            }
        );
        let moved = plane.set_state(task.as_str(), target).await;
        if let Err(e) = moved {
            tracing::warn!(task = %task, error = %e, "could not move a reclaimed task");
            outcomes.push(left(format!("moving it failed: {e}")));
            continue;
        }
        if let Err(e) = plane.post_comment(task.as_str(), &comment).await {
            tracing::warn!(task = %task, error = %e, "could not comment on a reclaimed task");
        }
        tracing::info!(task = %task, state = %target, blocked, lost, "reclaimed task put back on the board");
        outcomes.push(if blocked {
            Requeue::Blocked {
                task,
                state: target.to_owned(),
            }
        } else {
            Requeue::BackToClaim {
                task,
                state: target.to_owned(),
            }
        });
    }
    outcomes
}
