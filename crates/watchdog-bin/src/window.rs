//! The operator's window: what the overview shows (each backend's load
//! against its caps, every open slot and its holder, recent events, the
//! roles), one model for the web page, its JSON (`/api/overview`) and
//! anything else that wants it. As with `explain`, the ledger is read on
//! the blocking side ([`gather_overview`]), Plane is asked apart (each
//! role's missing names), and [`overview`] decides, with the rules the
//! runner decides by ([`ledger_core::next_start_allowed`]).

use std::collections::BTreeMap;

use std::time::Duration;

use ledger_core::{
    Event, EventKind, FinishReason, FleetStore, LedgerStore, RateWindow, Store, Timestamp,
    next_start_allowed,
};
use reconcile::ProcessProbe;
use runtime::{Config, Plane, check_role};
use serde::Serialize;

use crate::{SlotStatus, WatchdogError};

/// How many recent events the overview shows.
pub const RECENT_EVENTS: usize = 50;

/// What the ledger says, read in one go (blocks).
#[derive(Debug, Clone)]
pub struct OverviewFacts {
    /// The store's time.
    pub now: Timestamp,
    /// Where the ledger is.
    pub ledger: String,
    /// Every open slot.
    pub open: Vec<SlotStatus>,
    /// The newest events, oldest first.
    pub recent: Vec<Event>,
    /// Each rate-capped backend's starts within the last day.
    pub starts: BTreeMap<String, Vec<Timestamp>>,
    /// Each Plane key's shared budget.
    pub budgets: Vec<BudgetView>,
}

/// Reads the [`OverviewFacts`]. Blocks.
pub fn gather_overview(
    ledger: &dyn Store,
    config: &Config,
    probe: &dyn ProcessProbe,
    now: Timestamp,
) -> Result<OverviewFacts, WatchdogError> {
    let now = ledger.now(now)?;
    let open = ledger.open_slots()?;
    Ok(OverviewFacts {
        now,
        ledger: ledger.location(),
        open: open.iter().map(|s| SlotStatus::of(s, probe, now)).collect(),
        recent: ledger.events_before(u64::MAX, RECENT_EVENTS)?,
        starts: rate_capped_starts(ledger, config, now)?,
        budgets: budgets(ledger, config, now)?,
    })
}

/// One Plane key's shared budget: what every process using the key has
/// spent of Plane's window, and a 429's pause.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    /// The variable the key is read from (never the key).
    pub key_env: String,
    /// Requests within the last minute.
    pub used: u32,
    /// `plane.rate_limit_per_minute`.
    pub limit: u32,
    /// When a 429's pause ends, if one is in force.
    pub paused_until: Option<Timestamp>,
}

/// The budget of each key the configuration names whose variable is set
/// (`plane.api_key_env`, each role's own `api_key_env`), read as it
/// stands.
pub(crate) fn budgets(
    store: &dyn FleetStore,
    config: &Config,
    now: Timestamp,
) -> Result<Vec<BudgetView>, WatchdogError> {
    let mut envs = vec![config.plane.api_key_env.clone()];
    for role in config.roles.values() {
        if let Some(env) = &role.api_key_env
            && !envs.contains(env)
        {
            envs.push(env.clone());
        }
    }
    let mut views = Vec::new();
    for env in envs {
        let role = config
            .roles
            .values()
            .find(|r| r.api_key_env.as_ref() == Some(&env));
        let plane = match role {
            Some(role) => config.plane_config_for(role),
            None => config.plane_config(),
        };
        // A key whose variable is unset here spends nothing from here.
        let Ok(plane) = plane else { continue };
        let state =
            store.budget_state(&plane.api_key.fingerprint(), Duration::from_secs(60), now)?;
        views.push(BudgetView {
            key_env: env,
            used: state.in_window,
            limit: config.plane.rate_limit_per_minute,
            paused_until: state.paused_until,
        });
    }
    Ok(views)
}

/// Each rate-capped backend's starts within the last day, by name: what
/// its rate windows count at `now`.
pub(crate) fn rate_capped_starts(
    ledger: &dyn LedgerStore,
    config: &Config,
    now: Timestamp,
) -> Result<BTreeMap<String, Vec<Timestamp>>, WatchdogError> {
    let mut starts = BTreeMap::new();
    for (name, backend) in &config.backends {
        let limits = backend.limits;
        if limits.max_per_hour.is_some() || limits.max_per_day.is_some() {
            let since = now.saturating_sub(RateWindow::Daily.length());
            starts.insert(name.clone(), ledger.starts_after(&backend.name, since)?);
        }
    }
    Ok(starts)
}

/// How many of `starts` a `window` counts at `now` (the cap rule's count:
/// later than `now` minus the window).
pub(crate) fn in_window(starts: &[Timestamp], window: RateWindow, now: Timestamp) -> u32 {
    let since = now.saturating_sub(window.length());
    starts.iter().filter(|s| **s > since).count() as u32
}

/// Each role's names the project lacks (a state or label it waits for),
/// as `check-config` words them; a role Plane could not be asked about is
/// absent, and the error is returned beside.
pub async fn role_problems(
    plane: &dyn Plane,
    config: &Config,
) -> (BTreeMap<String, Vec<String>>, Option<String>) {
    let mut problems = BTreeMap::new();
    for role in config.roles.values() {
        match check_role(plane, role).await {
            Ok(found) => {
                problems.insert(
                    role.name.clone(),
                    found.iter().map(ToString::to_string).collect(),
                );
            }
            Err(e) => return (problems, Some(e.to_string())),
        }
    }
    (problems, None)
}

/// A rate window's use.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WindowUse {
    /// Starts in the window.
    pub started: u32,
    /// Its cap.
    pub limit: u32,
}

/// One backend's load against its caps.
#[derive(Debug, Clone, Serialize)]
pub struct BackendLoad {
    /// The backend.
    pub name: String,
    /// Its open slots.
    pub open: u32,
    /// `max_concurrent`.
    pub max_concurrent: u32,
    /// `max_per_hour` and the starts of the last hour.
    pub hourly: Option<WindowUse>,
    /// `max_per_day` and the starts of the last 24 hours.
    pub daily: Option<WindowUse>,
    /// When a full rate window next allows a start.
    pub next_start_at: Option<Timestamp>,
}

/// One recent event.
#[derive(Debug, Clone, Serialize)]
pub struct RecentEvent {
    /// The event.
    pub event: Event,
    /// `reclaimed` (an orphan rule closed the slot), `denied` (a cap
    /// refused it), `failed`, or empty: what the page marks.
    pub mark: &'static str,
    /// Its task's title, when the ledger recorded it.
    pub title: Option<String>,
    /// What it means.
    pub text: String,
}

/// One role.
#[derive(Debug, Clone, Serialize)]
pub struct RoleView {
    /// Its name.
    pub name: String,
    /// Its backend.
    pub backend: String,
    /// The state it claims from.
    pub claim_state: String,
    /// The labels it filters on.
    pub labels: Vec<String>,
    /// Runs one runner of it holds at once.
    pub parallel: u32,
    /// Names it waits for (the project lacks them): it claims nothing
    /// until they appear.
    pub waits_for: Vec<String>,
}

/// The overview.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When (the store's time).
    pub at: Timestamp,
    /// The ledger.
    pub ledger: String,
    /// Open slots in all.
    pub total_open: u32,
    /// `limits.max_concurrent`.
    pub global_max_concurrent: Option<u32>,
    /// Each backend's load.
    pub backends: Vec<BackendLoad>,
    /// Every open slot.
    pub slots: Vec<SlotStatus>,
    /// The newest events, newest first.
    pub recent: Vec<RecentEvent>,
    /// The roles.
    pub roles: Vec<RoleView>,
    /// Each Plane key's shared budget.
    pub budgets: Vec<BudgetView>,
    /// Why Plane could not be asked about the roles, if it could not.
    pub plane_error: Option<String>,
}

/// Builds the overview.
pub fn overview(
    facts: &OverviewFacts,
    problems: &BTreeMap<String, Vec<String>>,
    plane_error: Option<String>,
    config: &Config,
) -> Overview {
    let mut backends: BTreeMap<String, BackendLoad> = config
        .backends
        .iter()
        .map(|(name, b)| {
            let starts = facts.starts.get(name).map_or(&[][..], Vec::as_slice);
            let used = |window: RateWindow, limit: Option<u32>| {
                limit.map(|limit| WindowUse {
                    started: in_window(starts, window, facts.now),
                    limit,
                })
            };
            let load = BackendLoad {
                name: name.clone(),
                open: 0,
                max_concurrent: b.limits.max_concurrent,
                hourly: used(RateWindow::Hourly, b.limits.max_per_hour),
                daily: used(RateWindow::Daily, b.limits.max_per_day),
                next_start_at: next_start_allowed(starts, &b.limits, facts.now).map(|(_, at)| at),
            };
            (name.clone(), load)
        })
        .collect();
    for slot in &facts.open {
        backends
            .entry(slot.backend.clone())
            .or_insert_with(|| BackendLoad {
                name: slot.backend.clone(),
                open: 0,
                max_concurrent: 0,
                hourly: None,
                daily: None,
                next_start_at: None,
            })
            .open += 1;
    }
    // Titles the ledger recorded, for events that do not carry one.
    let mut titles: BTreeMap<&str, &str> = BTreeMap::new();
    for event in &facts.recent {
        if let EventKind::Started { key, owner, .. } = &event.kind
            && let Some(title) = &owner.title
        {
            titles.insert(key.task_id.as_str(), title);
        }
    }
    for slot in &facts.open {
        if let Some(title) = &slot.title {
            titles.insert(&slot.task_id, title);
        }
    }
    let recent = facts
        .recent
        .iter()
        .rev()
        .map(|event| RecentEvent {
            mark: match &event.kind {
                EventKind::Finished {
                    reason: FinishReason::Reconciled { .. },
                    ..
                } => "reclaimed",
                EventKind::Finished {
                    reason: FinishReason::Failed | FinishReason::Expired,
                    ..
                } => "failed",
                EventKind::Denied { .. } | EventKind::Unreadable { .. } => "denied",
                _ => "",
            },
            title: event
                .kind
                .key()
                .and_then(|k| titles.get(k.task_id.as_str()))
                .map(|t| (*t).to_owned()),
            text: crate::explain::history_text(event),
            event: event.clone(),
        })
        .collect();
    let roles = config
        .roles
        .values()
        .map(|r| RoleView {
            name: r.name.clone(),
            backend: r.backend.to_string(),
            claim_state: r.claim_state.clone(),
            labels: r.labels.clone(),
            parallel: r.parallel,
            waits_for: problems.get(&r.name).cloned().unwrap_or_default(),
        })
        .collect();
    Overview {
        at: facts.now,
        ledger: facts.ledger.clone(),
        total_open: facts.open.len() as u32,
        global_max_concurrent: config.global_max_concurrent,
        backends: backends.into_values().collect(),
        slots: facts.open.clone(),
        recent,
        roles,
        budgets: facts.budgets.clone(),
        plane_error,
    }
}
