//! `watchdog explain TASK`: a task's history, and why it is not running.
//!
//! Three steps, so that the decision is a function over data:
//! [`find_task`] asks Plane what the operator means (an identifier such as
//! `ROCK-42`, or a work item id) and where the task stands on the board;
//! [`gather`] reads what the ledger knows (on the blocking side: store calls
//! block); [`explain`] decides, with the rules the runner and the ledger
//! decide by, never a copy of them: [`runtime::role_fit`] (which role claims
//! the task), [`ledger_core::admission`] (the cap that denies it, on the
//! counts an admission would read), [`ledger_core::next_start_allowed`]
//! (when a full rate window has room), [`runtime::destination`]'s attempts
//! rule, and the orphan rules' own words for a reclaim.

use std::collections::BTreeMap;

use ledger_core::{
    AdmissionCounts, Backend, DenyReason, Event, EventKind, FinishReason, RateWindow, Slot, Store,
    TaskAttempts, TaskId, Timestamp, admission, next_start_allowed,
};
use plane_client::{LabelRef, PlaneError, WorkItem};
use reconcile::{ProcessProbe, Rule};
use runtime::{Config, Plane, RoleFit, role_fit, state_of};
use serde::Serialize;

use crate::{SlotStatus, WatchdogError};

/// How many of a task's events `explain` shows (the newest).
pub const HISTORY_LIMIT: usize = 500;

/// The task as Plane knows it.
#[derive(Debug, Clone, Serialize)]
pub struct OnBoard {
    /// The work item id.
    pub id: String,
    /// `ROCK-42`, when Plane gave the number.
    pub identifier: Option<String>,
    /// Its title.
    pub title: String,
    /// Its state's name.
    pub state: String,
    /// Its labels' names (ids Plane did not list are shown as ids).
    pub labels: Vec<String>,
}

/// What Plane said about the task the operator named.
#[derive(Debug, Clone)]
pub struct Found {
    /// The work item id (what the ledger knows the task by).
    pub task: TaskId,
    /// The task on the board; `None` when Plane does not have it (any
    /// more) or did not answer.
    pub board: Option<OnBoard>,
    /// Each role's problems with the project's names (a state or label
    /// it waits for), by role, as `check-config` words them.
    pub role_problems: BTreeMap<String, Vec<String>>,
    /// Why Plane could not be asked, if it could not.
    pub plane_error: Option<String>,
}

/// Asks Plane what `asked` names: `ROCK-42` by its identifier, anything
/// else as a work item id. What Plane does not know is still looked up in
/// the ledger as a task id (the task may have been deleted since, or
/// imported under that name); [`Explanation::unknown`] says when neither
/// knows it.
pub async fn find_task(
    plane: &dyn Plane,
    config: &Config,
    asked: &str,
) -> Result<Found, WatchdogError> {
    let asked = asked.trim();
    // `ROCK-42`: letters and digits, a dash, a number. A work item id is a
    // UUID, whose dashes leave more than that before its last one.
    let looks_like_identifier = asked.rsplit_once('-').is_some_and(|(p, n)| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_alphanumeric())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    // An identifier Plane does not know may still be a task id the ledger
    // knows (one imported from usage.json, say): the caller says which.
    let item = if looks_like_identifier {
        match plane.work_item_by_identifier(asked).await {
            Err(PlaneError::InvalidIdentifier { .. }) => Err(PlaneError::NotFound {
                path: asked.to_owned(),
            }),
            other => other,
        }
    } else if is_uuid(asked) {
        plane.get_work_item(asked).await
    } else {
        // Plane's ids are UUIDs: not one of its, perhaps the ledger's.
        Err(PlaneError::NotFound {
            path: asked.to_owned(),
        })
    };
    let task = match &item {
        Ok(item) => TaskId::new(item.id.clone()),
        Err(_) => TaskId::new(asked.to_owned()),
    }
    .map_err(|e| WatchdogError::Usage(format!("{asked:?} is not a task: {e}")))?;
    let (board, plane_error) = match item {
        Ok(item) => match on_board(plane, &config.plane.project_id, &item).await {
            Ok(board) => (Some(board), None),
            Err(e) => (None, Some(e.to_string())),
        },
        // Deleted or archived: the ledger may still know it.
        Err(PlaneError::NotFound { .. }) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (role_problems, plane_error) = match plane_error {
        Some(error) => (BTreeMap::new(), Some(error)),
        None => crate::window::role_problems(plane, config).await,
    };
    Ok(Found {
        task,
        board,
        role_problems,
        plane_error,
    })
}

/// The project's identifier (`ROCK`), asked of Plane at most every ten
/// minutes: a page left open asks for a task every few seconds, and each
/// request is spent from the key's budget the runners share.
async fn project_identifier(plane: &dyn Plane, project_id: &str) -> Option<String> {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    type Known = Option<(String, String, Instant)>;
    static KNOWN: Mutex<Known> = Mutex::new(None);
    let fresh = |known: &Known| {
        known
            .as_ref()
            .filter(|(id, _, at)| id == project_id && at.elapsed() < Duration::from_secs(600))
            .map(|(_, identifier, _)| identifier.clone())
    };
    if let Some(identifier) = fresh(&KNOWN.lock().unwrap_or_else(|e| e.into_inner())) {
        return Some(identifier);
    }
    let identifier = plane.project_identifier().await.ok()?;
    *KNOWN.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((project_id.to_owned(), identifier.clone(), Instant::now()));
    Some(identifier)
}

/// Whether `text` is a UUID (8-4-4-4-12 hex digits), as Plane's ids are.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn on_board(
    plane: &dyn Plane,
    project_id: &str,
    item: &WorkItem,
) -> Result<OnBoard, PlaneError> {
    let state = state_of(plane, item).await?;
    let known = if item.labels.iter().any(|l| matches!(l, LabelRef::Id(_))) {
        Some(plane.labels().await?)
    } else {
        None
    };
    let labels = item
        .labels
        .iter()
        .map(|label| match label {
            LabelRef::Expanded { name, .. } => name.clone(),
            LabelRef::Id(id) => known
                .as_ref()
                .and_then(|known| known.iter().find(|l| l.id == *id))
                .map_or_else(|| id.clone(), |l| l.name.clone()),
        })
        .collect();
    let project = project_identifier(plane, project_id).await;
    Ok(OnBoard {
        id: item.id.clone(),
        identifier: match (project, item.sequence_id) {
            (Some(project), Some(n)) => Some(format!("{project}-{n}")),
            _ => None,
        },
        title: item.name.clone(),
        state: state.name,
        labels,
    })
}

/// What the ledger knows that bears on a task: read in one go on the
/// blocking side.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The store's time.
    pub now: Timestamp,
    /// The task's newest events, oldest first.
    pub history: Vec<Event>,
    /// How its dispatches ended.
    pub attempts: TaskAttempts,
    /// Every open slot, as an operator sees it.
    pub open: Vec<SlotStatus>,
    /// Each configured backend's starts within the last day.
    pub starts: BTreeMap<String, Vec<Timestamp>>,
    /// Each Plane key's shared budget.
    pub budgets: Vec<crate::window::BudgetView>,
}

/// Reads the [`Facts`] for `task`. Blocks.
pub fn gather(
    ledger: &dyn Store,
    config: &Config,
    probe: &dyn ProcessProbe,
    task: &TaskId,
    now: Timestamp,
) -> Result<Facts, WatchdogError> {
    let now = ledger.now(now)?;
    let open: Vec<Slot> = ledger.open_slots()?;
    Ok(Facts {
        now,
        history: ledger.task_events(task, HISTORY_LIMIT)?,
        attempts: ledger.attempts(task)?,
        open: open.iter().map(|s| SlotStatus::of(s, probe, now)).collect(),
        starts: crate::window::rate_capped_starts(ledger, config, now)?,
        budgets: crate::window::budgets(ledger, config, now)?,
    })
}

/// One event of a task's history: the event as recorded, and a line for a
/// person.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    /// The event.
    pub event: Event,
    /// What it means.
    pub text: String,
}

/// Why a task is not running now: each thing that holds it back.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Wait {
    /// Plane does not have the task (deleted or archived).
    NotOnBoard,
    /// No role claims tasks in the task's state.
    NoRoleClaimsState {
        /// The task's state.
        state: String,
        /// Each role's claim state.
        claim_states: BTreeMap<String, String>,
    },
    /// A role claims the task's state but filters on labels it lacks.
    MissingLabels {
        /// The role.
        role: String,
        /// The labels of the role's filter the task lacks.
        labels: Vec<String>,
    },
    /// A role waits for names the project does not have (yet): a state or
    /// a label of its configuration. It claims nothing until they appear.
    RoleWaitsForNames {
        /// The role.
        role: String,
        /// What is missing, as `check-config` says it.
        missing: Vec<String>,
    },
    /// The task lost as many attempts as its role allows and was moved to
    /// the role's blocked state.
    AttemptsExhausted {
        /// The role.
        role: String,
        /// Attempts lost.
        lost: u64,
        /// `roles.NAME.max_attempts`.
        max_attempts: u32,
    },
    /// A concurrency cap is full: the slots that hold it.
    CapFull {
        /// The role that would claim it.
        role: String,
        /// Its backend.
        backend: String,
        /// `backends.NAME.max_concurrent` or `limits.max_concurrent`.
        cap: String,
        /// Open slots it counts.
        current: u32,
        /// The cap.
        limit: u32,
        /// The slots it counts.
        holders: Vec<SlotStatus>,
    },
    /// A rate cap is full until a start leaves its window.
    RateFull {
        /// The role that would claim it.
        role: String,
        /// Its backend.
        backend: String,
        /// `backends.NAME.max_per_hour` or `max_per_day`.
        cap: String,
        /// Starts in the window.
        current: u32,
        /// The cap.
        limit: u32,
        /// When the next start is allowed (RFC 3339).
        next_start_at: Timestamp,
        /// Seconds from now.
        in_secs: u64,
    },
    /// Plane answered the role's key with 429: every process using the
    /// key waits out its `Retry-After`.
    BudgetPaused {
        /// The role.
        role: String,
        /// The variable its key is read from.
        key_env: String,
        /// When the pause ends.
        until: Timestamp,
        /// Seconds from now.
        in_secs: u64,
    },
    /// Nothing holds it back: the role claims it at its next look.
    Ready {
        /// The role.
        role: String,
        /// How often the role looks (`watcher.poll_interval_secs`).
        poll_interval_secs: u64,
    },
}

/// The answer of `explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The work item id.
    pub task_id: String,
    /// The task on the board, when Plane has it.
    pub board: Option<OnBoard>,
    /// Whether the ledger has any record of the task.
    pub known_to_ledger: bool,
    /// Its history, oldest first (the newest [`HISTORY_LIMIT`] events).
    pub history: Vec<HistoryLine>,
    /// How its dispatches ended.
    pub attempts: TaskAttempts,
    /// Its open slots: when not empty, the task is running.
    pub running: Vec<SlotStatus>,
    /// Why it is not running (empty while it runs, or when Plane could not
    /// be asked).
    pub waits: Vec<Wait>,
    /// Why Plane could not be asked, if it could not.
    pub plane_error: Option<String>,
}

impl Explanation {
    /// Neither Plane nor the ledger knows the task: a typo, or another
    /// project's.
    pub fn unknown(&self) -> bool {
        self.board.is_none() && !self.known_to_ledger && self.plane_error.is_none()
    }
}

/// Decides why the task waits, from what Plane and the ledger said.
pub fn explain(found: &Found, facts: &Facts, config: &Config) -> Explanation {
    let task_id = found.task.to_string();
    let running: Vec<SlotStatus> = facts
        .open
        .iter()
        .filter(|s| s.task_id == task_id)
        .cloned()
        .collect();
    let mut waits = Vec::new();
    if running.is_empty() && found.plane_error.is_none() {
        match &found.board {
            None => waits.push(Wait::NotOnBoard),
            Some(board) => waits = board_waits(board, found, facts, config),
        }
    }
    Explanation {
        task_id,
        board: found.board.clone(),
        known_to_ledger: !facts.history.is_empty() || facts.attempts.started > 0,
        history: facts
            .history
            .iter()
            .map(|event| HistoryLine {
                text: history_text(event),
                event: event.clone(),
            })
            .collect(),
        attempts: facts.attempts,
        running,
        waits,
        plane_error: found.plane_error.clone(),
    }
}

fn board_waits(board: &OnBoard, found: &Found, facts: &Facts, config: &Config) -> Vec<Wait> {
    let mut waits = Vec::new();
    let carries = |name: &str| {
        board
            .labels
            .iter()
            .any(|l| plane_client::same_name(l, name))
    };
    // Whether some role claims from the task's state, labels aside.
    let mut in_a_claim_state = false;
    for role in config.roles.values() {
        if plane_client::same_name(&board.state, &role.blocked_state)
            && facts.attempts.lost() >= u64::from(role.max_attempts)
        {
            waits.push(Wait::AttemptsExhausted {
                role: role.name.clone(),
                lost: facts.attempts.lost(),
                max_attempts: role.max_attempts,
            });
        }
        let fit = role_fit(role, &board.state, carries);
        if !matches!(fit, RoleFit::Claims | RoleFit::MissingLabels(_)) {
            continue;
        }
        in_a_claim_state = true;
        // A role whose names the project lacks claims nothing until they
        // appear, whatever the task carries.
        let problems = found
            .role_problems
            .get(&role.name)
            .map_or(&[][..], Vec::as_slice);
        if !problems.is_empty() {
            waits.push(Wait::RoleWaitsForNames {
                role: role.name.clone(),
                missing: problems.to_vec(),
            });
            continue;
        }
        if let RoleFit::MissingLabels(labels) = fit {
            waits.push(Wait::MissingLabels {
                role: role.name.clone(),
                labels,
            });
            continue;
        }
        let before = waits.len();
        let key_env = role
            .api_key_env
            .as_ref()
            .unwrap_or(&config.plane.api_key_env);
        if let Some(until) = facts
            .budgets
            .iter()
            .find(|b| b.key_env == *key_env)
            .and_then(|b| b.paused_until)
        {
            waits.push(Wait::BudgetPaused {
                role: role.name.clone(),
                key_env: key_env.clone(),
                until,
                in_secs: until.duration_since(facts.now).as_secs(),
            });
        }
        waits.extend(cap_waits(&role.name, &role.backend, facts, config));
        if waits.len() == before {
            waits.push(Wait::Ready {
                role: role.name.clone(),
                poll_interval_secs: config.watcher.poll_interval.as_secs(),
            });
        }
    }
    if !in_a_claim_state {
        waits.push(Wait::NoRoleClaimsState {
            state: board.state.clone(),
            claim_states: config
                .roles
                .values()
                .map(|r| (r.name.clone(), r.claim_state.clone()))
                .collect(),
        });
    }
    waits
}

/// The caps that would deny the role's admission now, from the counts an
/// admission reads, and each rate window that is full.
fn cap_waits(role: &str, backend: &Backend, facts: &Facts, config: &Config) -> Vec<Wait> {
    let Some(limits) = config.limits_for(backend) else {
        return Vec::new();
    };
    let name = backend.as_str();
    let starts = facts.starts.get(name).map_or(&[][..], Vec::as_slice);
    let in_window = |window| u64::from(crate::window::in_window(starts, window, facts.now));
    let counts = AdmissionCounts {
        key_in_flight: false,
        open_total: facts.open.len() as u64,
        open_backend: facts.open.iter().filter(|s| s.backend == name).count() as u64,
        starts_last_hour: limits
            .backend
            .max_per_hour
            .map(|_| in_window(RateWindow::Hourly)),
        starts_last_day: limits
            .backend
            .max_per_day
            .map(|_| in_window(RateWindow::Daily)),
    };
    let mut waits = Vec::new();
    let Some(denial) = admission(&counts, &limits) else {
        return waits;
    };
    let cap_full = |cap: String, holders: Vec<SlotStatus>| Wait::CapFull {
        role: role.to_owned(),
        backend: name.to_owned(),
        cap,
        current: denial.current,
        limit: denial.limit,
        holders,
    };
    match denial.reason {
        DenyReason::GlobalConcurrencyExceeded => {
            waits.push(cap_full("limits.max_concurrent".into(), facts.open.clone()));
        }
        DenyReason::BackendConcurrencyExceeded => {
            let holders = facts
                .open
                .iter()
                .filter(|s| s.backend == name)
                .cloned()
                .collect();
            waits.push(cap_full(format!("backends.{name}.max_concurrent"), holders));
        }
        // The rate windows are told below, each with its time.
        _ => {}
    }
    if let Some((window, at)) = next_start_allowed(starts, &limits.backend, facts.now) {
        let (cap, limit) = match window {
            RateWindow::Hourly => ("max_per_hour", limits.backend.max_per_hour),
            RateWindow::Daily => ("max_per_day", limits.backend.max_per_day),
        };
        waits.push(Wait::RateFull {
            role: role.to_owned(),
            backend: name.to_owned(),
            cap: format!("backends.{name}.{cap}"),
            current: u32::try_from(in_window(window)).unwrap_or(u32::MAX),
            limit: limit.unwrap_or(0),
            next_start_at: at,
            in_secs: at.duration_since(facts.now).as_secs(),
        });
    }
    waits
}

/// One event of a task's history as a line for a person.
pub fn history_text(event: &Event) -> String {
    let at = event.at;
    match &event.kind {
        EventKind::Started { key, run_id, owner } => format!(
            "{at} started on {} (run {run_id}) by {}/{}{}",
            key.backend,
            owner.host,
            owner.runner.pid,
            owner
                .role
                .as_deref()
                .map(|r| format!(", role {r}"))
                .unwrap_or_default()
        ),
        EventKind::Finished {
            key,
            run_id,
            reason,
            started_at,
            ..
        } => {
            let why = match reason {
                FinishReason::Reconciled { rule } => match Rule::from_name(rule) {
                    Some(rule) => format!("reclaimed by {rule}: {}", rule.meaning()),
                    None => format!("reclaimed by {rule}"),
                },
                other => other.to_string(),
            };
            format!(
                "{at} finished on {} (run {run_id}): {why}, after {}",
                key.backend,
                crate::duration_text(at.duration_since(*started_at).as_secs())
            )
        }
        EventKind::Denied { key, denial, .. } => {
            format!("{at} denied on {}: {denial}", key.backend)
        }
        EventKind::Unreadable { detail } => format!("{at} unreadable record: {detail}"),
        other => format!("{at} {other:?}"),
    }
}

/// `explain` for a terminal.
pub fn explanation_text(e: &Explanation) -> String {
    let mut out = String::new();
    let safe = crate::terminal_safe;
    match &e.board {
        Some(b) => {
            out.push_str(&format!(
                "{} {:?} ({})\n",
                b.identifier.as_deref().unwrap_or("task"),
                safe(&b.title),
                e.task_id
            ));
            let labels = if b.labels.is_empty() {
                "no labels".to_owned()
            } else {
                format!("labels {}", safe(&b.labels.join(", ")))
            };
            out.push_str(&format!(
                "on the board: state {}, {labels}\n",
                safe(&b.state)
            ));
        }
        None => {
            out.push_str(&format!("task {}\n", e.task_id));
            if e.plane_error.is_none() {
                out.push_str("on the board: not found (deleted or archived)\n");
            }
        }
    }
    if let Some(error) = &e.plane_error {
        out.push_str(&format!(
            "on the board: unknown, Plane did not answer: {error}\n"
        ));
    }
    if !e.known_to_ledger {
        out.push_str("ledger: no record of this task (never admitted, or pruned)\n");
    } else {
        let a = &e.attempts;
        out.push_str(&format!(
            "ledger: {} dispatch(es): {} completed, {} failed, {} interrupted, {} reclaimed, {} released, {} expired\n",
            a.started, a.completed, a.failed, a.interrupted, a.reconciled, a.released, a.expired
        ));
        out.push_str("\nhistory:\n");
        for line in &e.history {
            out.push_str(&format!("  {:>6} {}\n", line.event.seq, safe(&line.text)));
        }
    }
    out.push('\n');
    if !e.running.is_empty() {
        for s in &e.running {
            out.push_str(&format!(
                "now: running on {} for {} (run {}), held by {} ({}{}), lease {}\n",
                s.backend,
                crate::duration_text(s.age_secs),
                s.run_id,
                s.owner,
                s.liveness,
                if s.liveness_detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.liveness_detail)
                },
                crate::lease_text(s.lease_left_secs)
            ));
        }
        return out;
    }
    if e.waits.is_empty() {
        if e.plane_error.is_some() {
            out.push_str("now: not running; why is unknown while Plane does not answer\n");
        }
        return out;
    }
    out.push_str("now: not running, because\n");
    for wait in &e.waits {
        out.push_str(&format!("  - {}\n", wait_text(wait)));
        if let Wait::CapFull { holders, .. } = wait {
            for h in holders {
                out.push_str(&format!("      {}\n", holder_text(h)));
            }
        }
    }
    out
}

/// One slot that holds a cap, as a line.
pub fn holder_text(h: &SlotStatus) -> String {
    format!(
        "{:?} ({}) on {}: run {}, running for {}, holder {} {}{}, lease {}",
        crate::terminal_safe(h.title.as_deref().unwrap_or("(untitled)")),
        h.task_id,
        h.backend,
        h.run_id,
        crate::duration_text(h.age_secs),
        h.owner,
        h.liveness,
        if h.liveness_detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", h.liveness_detail)
        },
        crate::lease_text(h.lease_left_secs)
    )
}

/// One reason as a sentence.
pub fn wait_text(wait: &Wait) -> String {
    match wait {
        Wait::NotOnBoard => "Plane does not have it (deleted or archived)".into(),
        Wait::NoRoleClaimsState {
            state,
            claim_states,
        } => format!(
            "no role claims tasks in state {state:?} (claim states: {})",
            claim_states
                .iter()
                .map(|(role, state)| format!("{role}: {state:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Wait::MissingLabels { role, labels } => format!(
            "role {role} claims only tasks labelled {}; this one lacks them",
            labels
                .iter()
                .map(|l| format!("{l:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Wait::RoleWaitsForNames { role, missing } => format!(
            "role {role} waits for names the project does not have: {}",
            missing.join("; ")
        ),
        Wait::AttemptsExhausted {
            role,
            lost,
            max_attempts,
        } => format!(
            "it lost {lost} attempt(s), role {role}'s max_attempts is {max_attempts}: moved to its blocked state"
        ),
        Wait::CapFull {
            backend,
            cap,
            current,
            limit,
            ..
        } => format!("backend {backend} is full: {cap} is {limit} and {current} slot(s) hold it:"),
        Wait::RateFull {
            cap,
            current,
            limit,
            next_start_at,
            in_secs,
            ..
        } => format!(
            "{cap} is {limit} and {current} started in that window: the next start is allowed at {next_start_at} (in {})",
            crate::duration_text(*in_secs)
        ),
        Wait::BudgetPaused {
            role,
            key_env,
            until,
            in_secs,
        } => format!(
            "Plane answered role {role}'s key ({key_env}) with 429: every process using it waits until {until} (in {})",
            crate::duration_text(*in_secs)
        ),
        Wait::Ready {
            role,
            poll_interval_secs,
        } => format!(
            "nothing holds it back: role {role} claims it at its next look (every {poll_interval_secs}s)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_s_ids_are_told_from_other_names() {
        assert!(is_uuid("7276aa07-ad02-400c-8000-aa07adc213f8"));
        assert!(!is_uuid("7276aa07-ad02-400c-8000-aa07adc213f"));
        assert!(!is_uuid("ROCK-42"));
        assert!(!is_uuid("T1"));
        assert!(!is_uuid("7276aa07-ad02-400c-8000-aa07adc213fz"));
    }
}
