//! The inflight watchdog as a library: [`run`] is `watchdog run` (scans,
//! webhooks, metrics, textfile) given a [`Scanner`] and a shutdown; the
//! one-shot commands ([`status`], [`events`], [`release`], [`interrupt`],
//! [`import_usage_json`], [`metrics_text`]) take a store, so tests and
//! other services hand them one. `main.rs` opens the configured store,
//! calls them and prints; [`cli`] is its command line.
//!
//! Stores are shared with live runners (redb in multi-process mode,
//! PostgreSQL by design), so every command runs beside them.
//!
//! # Example
//!
//! ```no_run
//! # fn example(config: &runtime::Config) -> Result<(), watchdog_bin::WatchdogError> {
//! // Store calls block: in async code, make them on the blocking pool.
//! let store = runtime::open_store(config)?;
//! let probe = watchdog_bin::probe(config)?;
//! let now = ledger_core::Clock::now(&ledger_core::SystemClock);
//! let status = watchdog_bin::status(&*store, config, &probe, now)?;
//! println!("{}", watchdog_bin::status_text(&status));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod cli;
pub mod explain;
mod service;
pub mod web;
pub mod webhook;
pub mod window;

pub use service::{RunOptions, run, run_scans};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ledger_core::{
    Backend, Clock, Event, EventKind, FinishOutcome, FinishReason, ImportReport, LedgerStore,
    RunId, SlotKey, Store, SystemClock, TaskId, Timestamp,
};
use plane_client::{PlaneClient, PlaneError};
use reconcile::{Liveness, ProcessProbe, ScanOptions, ScanReport};
use runtime::{
    Config, ConfigError, HostIdentity, LedgerAdapter, LinuxProcessProbe, Plane, PlaneLookup,
    requeue_reclaimed,
};
use serde::Serialize;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchdogError {
    /// Bad configuration or arguments (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad argument value (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The ledger store failed.
    #[error("ledger: {0}")]
    Store(#[from] ledger_core::LedgerError),
    /// Plane's client could not be built.
    #[error("plane: {0}")]
    Plane(#[from] PlaneError),
    /// The scan could not run.
    #[error("scan: {0}")]
    Scan(#[from] reconcile::ScanError),
    /// This host's identity could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The configuration names states or labels the Plane project does not
    /// have, or a command that cannot be started (exit status 2).
    #[error("{0}")]
    Misconfigured(String),
    /// `events` listed records of the log it could not read, in their
    /// place (exit status 1, after the listing).
    #[error(
        "{0} event record(s) could not be read (listed in place as unreadable): the ledger is damaged, or was written by a newer inflight"
    )]
    UnreadableEvents(usize),
    /// `interrupt` found no open slot matching what it was asked for
    /// (exit status 1).
    #[error("nothing running matches {0}")]
    NothingToInterrupt(String),
    /// `explain` was given an identifier Plane does not know (exit
    /// status 1).
    #[error("{0}")]
    UnknownTask(String),
    /// `explain` could not ask Plane where the task stands (exit status 1,
    /// after what the ledger knows).
    #[error("plane did not answer: {0}")]
    PlaneUnanswered(String),
    /// A scan ran but could not do its job: the project did not answer, a
    /// lookup or a reclaim failed (exit status 1, after the report).
    #[error("scan incomplete: {0}")]
    ScanFailed(String),
}

fn open_ledger(config: &Config) -> Result<Arc<dyn Store>, WatchdogError> {
    Ok(runtime::open_store(config)?)
}

/// Runs `call` on the blocking pool: opening a store and calling it block,
/// and a runtime's thread must stay free (for signals, above all).
async fn off_runtime<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, WatchdogError> + Send + 'static,
) -> Result<T, WatchdogError> {
    tokio::task::spawn_blocking(|| ledger_core::blocking::may_block(call))
        .await
        .map_err(|e| {
            WatchdogError::Io(std::io::Error::other(format!(
                "the command did not complete: {e}"
            )))
        })?
}

/// Opens the store `config` names and runs `call` with it, both on the
/// blocking pool: how an async caller runs a one-shot command.
pub async fn with_store<T: Send + 'static>(
    config: &Config,
    call: impl FnOnce(&dyn LedgerStore, &Config) -> Result<T, WatchdogError> + Send + 'static,
) -> Result<T, WatchdogError> {
    let config = config.clone();
    off_runtime(move || call(&*open_ledger(&config)?, &config)).await
}

/// Opens the configured store for reading only and runs `call` with it,
/// both on the blocking pool: how `status`, `events` and `metrics` look,
/// creating, migrating and writing nothing (a missing ledger is an error
/// naming it).
pub async fn with_store_read_only<T: Send + 'static>(
    config: &Config,
    call: impl FnOnce(&dyn LedgerStore, &Config) -> Result<T, WatchdogError> + Send + 'static,
) -> Result<T, WatchdogError> {
    let config = config.clone();
    off_runtime(move || call(&*runtime::open_store_read_only(&config)?, &config)).await
}

/// Opens the configured store for reading only, on the blocking pool: for
/// a command that reads it more than once (`events --follow`).
pub async fn open_read_only(config: &Config) -> Result<Arc<dyn Store>, WatchdogError> {
    let config = config.clone();
    off_runtime(move || Ok(runtime::open_store_read_only(&config)?)).await
}

/// The process probe the commands judge owners with: this host's
/// identity, `watcher.grace_secs` of slack.
pub fn probe(config: &Config) -> Result<LinuxProcessProbe, WatchdogError> {
    Ok(LinuxProcessProbe::new(
        HostIdentity::current()?,
        config.watcher.grace,
    ))
}

/// What a scan works with. [`Scanner::new`] wires the real ones (the
/// configured store, Plane's HTTP client, `/proc`, the wall clock).
#[allow(missing_debug_implementations)]
pub struct ScanDependencies {
    /// The ledger.
    pub store: Arc<dyn Store>,
    /// The Plane project.
    pub plane: Arc<dyn Plane>,
    /// Whether a slot's owner is alive.
    pub probe: Arc<dyn ProcessProbe>,
    /// The time the rules judge leases and retention by.
    pub clock: Arc<dyn Clock>,
}

/// The parts a scan needs, built once for `run`.
pub struct Scanner {
    config: Config,
    ledger: Arc<dyn Store>,
    plane: Arc<dyn Plane>,
    probe: Arc<dyn ProcessProbe>,
    clock: Arc<dyn Clock>,
    metrics: Arc<runtime::Metrics>,
    /// The webhook secret, when given rather than read from the
    /// environment.
    webhook_secret: Option<plane_client::webhook::WebhookSecret>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("store", &self.ledger.location())
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

impl Scanner {
    /// Opens the ledger and builds the Plane client. Blocks: from async
    /// code, call [`Scanner::open`].
    pub fn new(config: Config) -> Result<Self, WatchdogError> {
        // The configuration's errors first (a missing key variable is
        // one): a ledger that cannot be opened must not hide them.
        let plane_config = config.plane_config()?;
        let store = open_ledger(&config)?;
        let metrics = runtime::Metrics::new();
        let dependencies = ScanDependencies {
            plane: Arc::new(runtime::plane_client(
                plane_config,
                store.clone(),
                &metrics,
            )?),
            store,
            probe: Arc::new(probe(&config)?),
            clock: Arc::new(SystemClock),
        };
        let mut scanner = Self::with_dependencies(config, dependencies);
        scanner.metrics = metrics;
        Ok(scanner)
    }

    /// [`Scanner::new`] on the blocking pool, for async callers (opening a
    /// store blocks).
    pub async fn open(config: Config) -> Result<Self, WatchdogError> {
        off_runtime(move || Self::new(config)).await
    }

    /// What this watchdog counts (scans, reclaims, Plane requests, webhook
    /// deliveries), for `--metrics-addr` and `--textfile`.
    pub fn metrics(&self) -> Arc<runtime::Metrics> {
        self.metrics.clone()
    }

    /// Where a scrape reads the ledger's side from.
    pub fn ledger_side(&self) -> runtime::LedgerSide {
        runtime::LedgerSide {
            store: self.ledger.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            probe: Some(self.probe.clone()),
        }
    }

    /// The configuration it scans for.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ledger store it scans.
    pub fn store(&self) -> Arc<dyn Store> {
        self.ledger.clone()
    }

    /// The web page's view of what this scanner reads.
    pub fn window(&self) -> web::Window {
        web::Window {
            config: self.config.clone(),
            store: self.ledger.clone(),
            plane: self.plane.clone(),
            probe: self.probe.clone(),
            clock: self.clock.clone(),
        }
    }

    /// A receiver of Plane's webhooks for `config` (`[webhook]`), writing
    /// its hints to this scanner's store; `None` when webhooks are off.
    /// The secret is read from `webhook.secret_env` (exit status 2 when
    /// it is unset or empty).
    pub fn webhook_receiver(&self) -> Result<Option<webhook::Receiver>, WatchdogError> {
        let Some(settings) = &self.config.webhook else {
            return Ok(None);
        };
        let secret = match &self.webhook_secret {
            Some(secret) => secret.clone(),
            None => plane_client::webhook::WebhookSecret::from_env(&settings.secret_env).map_err(
                |message| ConfigError {
                    path: self.config.path.display().to_string(),
                    key: "webhook.secret_env".into(),
                    message,
                },
            )?,
        };
        Ok(Some(webhook::Receiver::new(
            &self.config,
            secret,
            self.ledger.clone(),
            self.clock.clone(),
            settings.max_body_bytes,
            self.metrics.clone(),
        )))
    }

    /// Verifies webhook deliveries with `secret` instead of the one
    /// `webhook.secret_env` names (an embedder's, a test's).
    pub fn with_webhook_secret(mut self, secret: plane_client::webhook::WebhookSecret) -> Self {
        self.webhook_secret = Some(secret);
        self
    }

    /// A scanner for `config` working with `dependencies`.
    pub fn with_dependencies(config: Config, dependencies: ScanDependencies) -> Self {
        let ScanDependencies {
            store,
            plane,
            probe,
            clock,
        } = dependencies;
        Self {
            config,
            ledger: store,
            plane,
            probe,
            clock,
            metrics: runtime::Metrics::new(),
            webhook_secret: None,
        }
    }

    /// One pass of the rules. With `apply`, reclaimed tasks still running in
    /// Plane go back on the board, and events past their retention are
    /// pruned.
    pub async fn scan(&self, apply: bool) -> Result<ScanReport, WatchdogError> {
        let options = ScanOptions {
            apply,
            window: self.config.ledger.window,
            project: Some(self.config.project()),
            lease_grace: self.config.watcher.grace,
            ..ScanOptions::default()
        };
        let now = self.clock.now();
        // The rules call the store and the process table synchronously: the
        // scan runs on a blocking thread, its Plane lookups driven by this
        // runtime, so that a store waiting for another writer never stalls
        // the runtime (nor a shutdown signal).
        let runtime = tokio::runtime::Handle::current();
        let ledger = LedgerAdapter(self.ledger.clone());
        let lookup = PlaneLookup(self.plane.clone());
        let probe = self.probe.clone();
        let report = tokio::task::spawn_blocking(move || {
            ledger_core::blocking::may_block(|| {
                runtime.block_on(reconcile::scan(&ledger, &lookup, &*probe, &options, now))
            })
        })
        .await
        .map_err(|e| WatchdogError::ScanFailed(format!("the scan did not complete: {e}")))??;
        if apply {
            requeue_reclaimed(&*self.plane, &self.ledger, &self.config, &report.actions).await;
            match runtime::on_store(&self.ledger, move |s| s.prune(now)).await {
                Ok(pruned) if pruned.events_removed > 0 => {
                    tracing::info!(events = pruned.events_removed, "pruned old events")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not prune old events"),
            }
        }
        Ok(report)
    }
}

/// What `check-config` found.
#[derive(Debug, Clone)]
pub struct ConfigCheck {
    /// Work items in the project's list (the project answered).
    pub work_items: u64,
    /// Per role, the names that do not resolve (empty: the role is sound).
    pub roles: BTreeMap<String, Vec<runtime::RoleProblem>>,
}

impl ConfigCheck {
    /// Every problem, in role order.
    pub fn problems(&self) -> impl Iterator<Item = &runtime::RoleProblem> {
        self.roles.values().flatten()
    }
}

/// What can be checked of the configuration without asking Plane or
/// opening the ledger (`check-config --offline`, a unit's `ExecStartPre=`):
/// every key variable it names is set (exit status 2 naming it), every
/// backend's command can be started (a command that cannot would move the
/// first task it gets to the blocked state), and a redb ledger's folder
/// exists (the service's state directory).
pub async fn check_locally(config: &Config) -> Result<(), WatchdogError> {
    config.plane_config()?;
    for role in config.roles.values() {
        config.plane_config_for(role)?;
    }
    // Looking at files blocks: off the runtime.
    let local = config.clone();
    tokio::task::spawn_blocking(move || {
        for backend in local.backends.values() {
            if let Err(why) = local.check_program(backend) {
                return Err(WatchdogError::Misconfigured(format!(
                    "backends.{}.command: cannot be started: {why}",
                    backend.name
                )));
            }
        }
        if let runtime::StoreSettings::Redb = &local.ledger.store
            && let Some(folder) = local.ledger.path.parent()
            && !folder.is_dir()
            && !can_be_made(folder)
        {
            return Err(WatchdogError::Misconfigured(format!(
                "ledger.path: its folder {} does not exist and cannot be made here (for a systemd unit: StateDirectory=inflight makes /var/lib/inflight, writable by the service)",
                folder.display()
            )));
        }
        Ok(())
    })
    .await
    .map_err(|e| {
        WatchdogError::Io(std::io::Error::other(format!(
            "checking the configuration: {e}"
        )))
    })?
}

/// Whether a missing `folder` can be made: its nearest existing ancestor
/// is a folder this process may write in (not on a read-only mount, as
/// most of the file system is under a unit's `ProtectSystem=strict`).
fn can_be_made(folder: &Path) -> bool {
    let Some(existing) = folder.ancestors().find(|a| a.exists()) else {
        return false;
    };
    let Ok(c_path) = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access() reads a NUL-terminated path and nothing else.
    existing.is_dir() && unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } == 0
}

/// Checks the configuration: every backend's command can be started (a
/// misconfiguration, exit status 2, naming the backend), and against
/// Plane: the project answers with this key (and each role's own), and
/// every role's states and labels exist in it. A Plane that does not
/// answer is an error (exit status 1); names that do not resolve are
/// returned, for the caller to exit with status 2.
pub async fn check_config(config: &Config) -> Result<ConfigCheck, WatchdogError> {
    check_locally(config).await?;
    let plane = PlaneClient::new(config.plane_config()?)?;
    let probe = plane.probe_project().await?;
    let mut roles = BTreeMap::new();
    for role in config.roles.values() {
        // A role with a key of its own is checked with that key: the
        // project must answer it too.
        let own = match &role.api_key_env {
            None => None,
            Some(env) => {
                let client = PlaneClient::new(config.plane_config_for(role)?)?;
                if let Err(e) = client.probe_project().await {
                    return Err(WatchdogError::Misconfigured(format!(
                        "roles.{}.api_key_env: the project does not answer the key in {env}: {e}",
                        role.name
                    )));
                }
                Some(client)
            }
        };
        let checked = runtime::check_role(own.as_ref().unwrap_or(&plane), role).await?;
        roles.insert(role.name.clone(), checked);
    }
    Ok(ConfigCheck {
        work_items: probe.total_work_items,
        roles,
    })
}

/// One open slot as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// Backend.
    pub backend: String,
    /// Task.
    pub task_id: String,
    /// Run.
    pub run_id: String,
    /// The task's title when it was admitted, if recorded.
    pub title: Option<String>,
    /// Role of the runner, if recorded.
    pub role: Option<String>,
    /// `host/pid` of the holder (the runner, or its keeper).
    pub owner: String,
    /// The holder's host.
    pub host: String,
    /// The holder's pid.
    pub pid: u32,
    /// Seconds of lease left (negative: expired that long ago), by the
    /// store's clock.
    pub lease_left_secs: i64,
    /// The executor's pid, once spawned.
    pub executor_pid: Option<u32>,
    /// When it was admitted.
    pub started_at: String,
    /// Seconds since then.
    pub age_secs: u64,
    /// `alive`, `dead` or `unknown`, as the process probe sees it.
    pub liveness: &'static str,
    /// Why.
    pub liveness_detail: String,
}

impl SlotStatus {
    /// `slot` as an operator sees it at `now` (the store's time), its
    /// holder judged by `probe`.
    pub fn of(slot: &ledger_core::Slot, probe: &dyn ProcessProbe, now: Timestamp) -> SlotStatus {
        let (liveness, detail) = match probe.liveness(&slot.owner) {
            Liveness::Alive => ("alive", String::new()),
            Liveness::Dead { why } => ("dead", why),
            Liveness::Unknown { why } => ("unknown", why),
        };
        let lease_left_ms = slot.lease_until.as_unix_millis() - now.as_unix_millis();
        SlotStatus {
            backend: slot.key.backend.to_string(),
            task_id: slot.key.task_id.to_string(),
            run_id: slot.run_id.to_string(),
            title: slot.owner.title.clone(),
            role: slot.owner.role.clone(),
            owner: format!("{}/{}", slot.owner.host, slot.owner.runner.pid),
            host: slot.owner.host.clone(),
            pid: slot.owner.runner.pid,
            lease_left_secs: lease_left_ms.div_euclid(1000),
            executor_pid: slot.owner.executor.as_ref().map(|e| e.process.pid),
            started_at: slot.started_at.to_string(),
            age_secs: now.duration_since(slot.started_at).as_secs(),
            liveness,
            liveness_detail: detail,
        }
    }
}

/// One backend's load as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Open slots.
    pub open: u32,
    /// `max_concurrent`.
    pub max_concurrent: u32,
}

/// The answer of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The ledger file.
    pub ledger: String,
    /// Every open slot.
    pub slots: Vec<SlotStatus>,
    /// Per backend: open against the cap (every configured backend, and any
    /// other that holds slots).
    pub backends: BTreeMap<String, BackendStatus>,
    /// Open slots in all, and the global cap.
    pub total_open: u32,
    /// `[limits] max_concurrent`.
    pub global_max_concurrent: Option<u32>,
}

/// `check-config`'s findings for a terminal: the project, then each role
/// (`ok` or its problems).
pub fn config_check_text(config: &Config, check: &ConfigCheck) -> String {
    let mut out = format!(
        "plane: project {} answers ({} work items)\n",
        config.project(),
        check.work_items
    );
    for (role, problems) in &check.roles {
        if problems.is_empty() {
            out.push_str(&format!("role {role}: ok\n"));
        }
        for problem in problems {
            out.push_str(&format!("role {role}: {problem}\n"));
        }
    }
    out
}

/// Open slots, their owners' liveness, and counts against the caps.
pub fn status(
    ledger: &dyn LedgerStore,
    config: &Config,
    probe: &dyn ProcessProbe,
    now: Timestamp,
) -> Result<Status, WatchdogError> {
    let mut backends: BTreeMap<String, BackendStatus> = config
        .backends
        .iter()
        .map(|(name, b)| {
            (
                name.clone(),
                BackendStatus {
                    open: 0,
                    max_concurrent: b.limits.max_concurrent,
                },
            )
        })
        .collect();
    let now = ledger.now(now)?;
    let mut slots = Vec::new();
    for slot in ledger.open_slots()? {
        backends
            .entry(slot.key.backend.to_string())
            .or_insert(BackendStatus {
                open: 0,
                max_concurrent: 0,
            })
            .open += 1;
        slots.push(SlotStatus::of(&slot, probe, now));
    }
    Ok(Status {
        ledger: ledger.location(),
        total_open: slots.len() as u32,
        slots,
        backends,
        global_max_concurrent: config.global_max_concurrent,
    })
}

/// Renders `status` for a terminal: each open slot (its task's title and
/// id, how long it has run, its holder and whether that is alive, the
/// lease left, the role and run), then each backend's count against its
/// cap.
pub fn status_text(status: &Status) -> String {
    let mut out = format!("ledger {}\n\n", status.ledger);
    if status.slots.is_empty() {
        out.push_str("no open slots\n");
    } else {
        out.push_str(&format!(
            "{:<12} {:<46} {:>8}  {:<24} {:<17} {}\n",
            "BACKEND", "TASK", "RUNNING", "HOLDER", "LEASE", "ROLE / RUN"
        ));
        for s in &status.slots {
            let holder = format!("{} {}", s.liveness, s.owner);
            out.push_str(&format!(
                "{:<12} {:<46} {:>8}  {:<24} {:<17} {} / {}{}\n",
                s.backend,
                task_cell(s.title.as_deref(), &s.task_id, 46),
                duration_text(s.age_secs),
                holder,
                lease_text(s.lease_left_secs),
                s.role.as_deref().unwrap_or("-"),
                s.run_id,
                if s.liveness_detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", terminal_safe(&s.liveness_detail))
                }
            ));
        }
    }
    out.push_str("\nbackend      open / cap\n");
    for (name, b) in &status.backends {
        out.push_str(&format!(
            "{name:<12} {:>4} / {}\n",
            b.open, b.max_concurrent
        ));
    }
    out.push_str(&format!(
        "{:<12} {:>4} / {}\n",
        "(all)",
        status.total_open,
        status
            .global_max_concurrent
            .map_or("-".to_owned(), |c| c.to_string())
    ));
    out
}

/// A text redrawn in place on a terminal (`status --watch`): on the
/// alternate screen, so the terminal's contents and scrollback are as they
/// were once it is dropped; each frame starts from the top-left corner
/// and clears what the last one left, so nothing scrolls.
#[derive(Debug)]
pub struct Redraw {
    out: std::io::Stdout,
}

impl Redraw {
    /// Switches to the alternate screen.
    pub fn start() -> Redraw {
        let redraw = Redraw {
            out: std::io::stdout(),
        };
        redraw.write("\x1b[?1049h\x1b[?25l");
        redraw
    }

    /// Shows `text` as the whole screen.
    pub fn show(&mut self, text: &str) {
        self.write(&frame(text));
    }

    fn write(&self, bytes: &str) {
        use std::io::Write;
        let mut out = self.out.lock();
        // A terminal gone away is no reason to fail: there is no one to tell.
        let _ = out.write_all(bytes.as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Redraw {
    fn drop(&mut self) {
        self.write("\x1b[?25h\x1b[?1049l");
    }
}

/// One frame: home, each line cleared to its end, the rest cleared.
fn frame(text: &str) -> String {
    let mut out = String::from("\x1b[H");
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\x1b[K\r\n");
    }
    out.push_str("\x1b[J");
    out
}

/// A task in a column of `width` characters: its title (cut to fit, made
/// safe for a terminal) and the first 8 characters of its id; the whole id
/// when no title was recorded.
pub(crate) fn task_cell(title: Option<&str>, task_id: &str, width: usize) -> String {
    let Some(title) = title else {
        return task_id.to_owned();
    };
    let id: String = task_id.chars().take(8).collect();
    let room = width.saturating_sub(id.chars().count() + 1);
    let title = terminal_safe(title);
    let title = if title.chars().count() > room {
        let cut: String = title.chars().take(room.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        title
    };
    format!("{title} {id}")
}

/// A duration for a person: seconds up to two minutes, then minutes up to
/// two hours, then hours.
pub(crate) fn duration_text(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// A lease's time left, or how long ago it ran out.
pub(crate) fn lease_text(left_secs: i64) -> String {
    if left_secs >= 0 {
        format!("{} left", duration_text(left_secs.unsigned_abs()))
    } else {
        format!("expired {} ago", duration_text(left_secs.unsigned_abs()))
    }
}

/// Text from Plane or the ledger made safe for a terminal: control
/// characters (an escape sequence in a title could rewrite the screen)
/// become `?`.
pub(crate) fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Which events `events` lists; every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// At or after this time.
    pub since: Option<Timestamp>,
    /// Of this task.
    pub task: Option<TaskId>,
    /// Of this backend.
    pub backend: Option<Backend>,
    /// Of one of these kinds (any when empty).
    pub kinds: Vec<cli::EventKindFilter>,
}

impl EventFilter {
    /// Whether `event` matches.
    pub fn matches(&self, event: &Event) -> bool {
        use cli::EventKindFilter as K;
        let key = event.kind.key();
        let kind = match &event.kind {
            EventKind::Started { .. } => Some(K::Started),
            EventKind::Finished { .. } => Some(K::Finished),
            EventKind::Denied { .. } => Some(K::Denied),
            EventKind::Unreadable { .. } => Some(K::Unreadable),
            _ => None,
        };
        // A record too damaged to tell its time is listed whatever the
        // time asked for (it might belong there), as the stores list it.
        let unplaced = matches!(event.kind, EventKind::Unreadable { .. })
            && event.at == Timestamp::from_unix_millis(0);
        (unplaced || self.since.is_none_or(|since| event.at >= since))
            && self
                .task
                .as_ref()
                .is_none_or(|task| key.is_some_and(|k| k.task_id == *task))
            && self
                .backend
                .as_ref()
                .is_none_or(|backend| key.is_some_and(|k| k.backend == *backend))
            && (self.kinds.is_empty() || kind.is_some_and(|k| self.kinds.contains(&k)))
    }
}

/// The retained audit log's events that match `filter`, oldest first;
/// with a `limit`, only the newest that many. A task's events are read
/// from its index, not the whole log.
pub fn events(
    ledger: &dyn LedgerStore,
    filter: &EventFilter,
    limit: Option<usize>,
) -> Result<Vec<Event>, WatchdogError> {
    let candidates = match (&filter.task, filter.since) {
        (Some(task), _) => ledger.task_events(task, usize::MAX)?,
        (None, None) => ledger.events_after(0, usize::MAX)?,
        (None, Some(from)) => ledger.events_between(from, Timestamp::from_unix_millis(i64::MAX))?,
    };
    let mut matching: Vec<Event> = candidates
        .into_iter()
        .filter(|e| filter.matches(e))
        .collect();
    if let Some(limit) = limit {
        matching.drain(..matching.len().saturating_sub(limit));
    }
    Ok(matching)
}

/// One event as a line of text.
pub fn event_text(event: &Event) -> String {
    let at = event.at;
    match &event.kind {
        EventKind::Started { key, run_id, owner } => format!(
            "{:>6} {at} started  {key} run {run_id} by {}/{}",
            event.seq, owner.host, owner.runner.pid
        ),
        EventKind::Finished {
            key,
            run_id,
            reason,
            started_at,
            ..
        } => format!(
            "{:>6} {at} finished {key} run {run_id}: {reason} after {}s",
            event.seq,
            at.duration_since(*started_at).as_secs()
        ),
        EventKind::Denied {
            key,
            run_id,
            denial,
        } => {
            format!(
                "{:>6} {at} denied   {key} run {run_id}: {denial}",
                event.seq
            )
        }
        EventKind::Unreadable { detail } => {
            format!("{:>6} {at} unreadable record: {detail}", event.seq)
        }
        other => format!("{:>6} {at} {other:?}", event.seq),
    }
}

/// How many of `events` could not be read.
pub fn unreadable_events(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Unreadable { .. }))
        .count()
}

/// Releases an open slot by hand. A backend the configuration does not
/// name is an error (a typo must not read as "nothing to release") unless
/// the ledger still holds a slot of it (a backend removed from the
/// configuration while its slots were open): that slot is released.
pub fn release(
    ledger: &dyn LedgerStore,
    config: &Config,
    backend: &str,
    task: &str,
    run: Option<&str>,
    now: Timestamp,
) -> Result<FinishOutcome, WatchdogError> {
    let usage = |flag: &str, e: ledger_core::IdError| WatchdogError::Usage(format!("{flag}: {e}"));
    let key = SlotKey::new(
        Backend::new(backend).map_err(|e| usage("--backend", e))?,
        TaskId::new(task).map_err(|e| usage("--task", e))?,
    );
    let run = run
        .map(RunId::new)
        .transpose()
        .map_err(|e| usage("--run", e))?;
    let released = ledger.finish(&key, run.as_ref(), FinishReason::ReleasedByOperator, now)?;
    if matches!(released, FinishOutcome::NotInFlight) && !config.backends.contains_key(backend) {
        let known: Vec<&str> = config.backends.keys().map(String::as_str).collect();
        return Err(WatchdogError::Usage(format!(
            "--backend {backend}: no backend of that name in the configuration (backends: {}), and no open slot of it in the ledger",
            known.join(", ")
        )));
    }
    Ok(released)
}

/// Migrates the reference system's `usage.json`.
pub fn import_usage_json(
    ledger: &dyn LedgerStore,
    file: &Path,
) -> Result<ImportReport, WatchdogError> {
    Ok(ledger.import_usage_json(file)?)
}

/// `import-usage-json`'s report as one JSON object.
pub fn import_report_json(report: &ImportReport) -> serde_json::Value {
    serde_json::json!({
        "entries": report.entries,
        "started": report.started,
        "finished": report.finished,
        "unrelated": report.unrelated,
        "malformed": report.malformed,
        "malformed_examples": report.malformed_examples,
        "events_recorded": report.events_recorded,
        "already_imported": report.already_imported,
        "slots_opened": report.slots_opened,
        "slots_closed": report.slots_closed,
        "slots_held_by_other_runs": report.slots_held_by_other_runs,
        "open_after_import": report.open_after_fold.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// `release`'s answer for a terminal.
pub fn release_text(backend: &str, task: &str, released: &FinishOutcome) -> String {
    match released {
        FinishOutcome::Finished(slot) => format!("released {} (run {})", slot.key, slot.run_id),
        FinishOutcome::NotInFlight => {
            format!("nothing to release: no open slot for {backend}/{task}")
        }
        FinishOutcome::OtherRunInFlight { open_run } => {
            format!("not released: {backend}/{task} is held by run {open_run}, not the one given")
        }
    }
}

/// The ledger's metrics once (`watchdog metrics`), in Prometheus' text
/// format. Blocks: call it off the async runtime.
pub fn metrics_text(
    ledger: &dyn LedgerStore,
    config: &Config,
    probe: &dyn ProcessProbe,
    now: Timestamp,
) -> Result<String, WatchdogError> {
    let metrics = runtime::Metrics::new();
    metrics.refresh(ledger, config, Some(probe), now)?;
    Ok(metrics.render_ledger(false))
}

/// Which running executors `watchdog interrupt` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterruptWhich {
    /// The runs of one task (on whatever backend).
    Task(String),
    /// Every run of one role.
    Role(String),
    /// Every run.
    All,
}

impl InterruptWhich {
    /// From `interrupt`'s flags: exactly one of `--task`, `--role`, `--all`.
    pub fn from_flags(
        task: Option<String>,
        role: Option<String>,
        all: bool,
    ) -> Result<Self, WatchdogError> {
        match (task, role, all) {
            (Some(task), None, false) => Ok(Self::Task(task)),
            (None, Some(role), false) => Ok(Self::Role(role)),
            (None, None, true) => Ok(Self::All),
            _ => Err(WatchdogError::Usage(
                "interrupt needs exactly one of --task, --role, --all".into(),
            )),
        }
    }
}

impl std::fmt::Display for InterruptWhich {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterruptWhich::Task(task) => write!(f, "--task {task}: no open slot of that task"),
            InterruptWhich::Role(role) => write!(f, "--role {role}: no open slot of that role"),
            InterruptWhich::All => f.write_str("--all: no open slot"),
        }
    }
}

/// What `watchdog interrupt` did with one open slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptVerdict {
    /// Its keeper was sent SIGTERM: it stops the executor (SIGTERM to its
    /// group, the grace period, SIGKILL) and records the run as
    /// interrupted, which the role's runner reports (the task goes back).
    Signalled,
    /// Its keeper has already ended (its outcome waits for a runner).
    Ended,
    /// Held by a keeper on another host: run the command there.
    Elsewhere,
    /// Held by a runner that has not yet handed it to a keeper (for a
    /// moment), or by a runner of a build without keepers.
    NoKeeper,
}

/// Asks the keepers of the matching slots on this host to stop their
/// executors ([`InterruptVerdict`] for each); a slot's keeper is signalled
/// only if it still runs as the process its slot records.
/// [`WatchdogError::NothingToInterrupt`] when a task or role was asked for
/// and no open slot matches; `--all` with nothing open is no error.
pub fn interrupt(
    ledger: &dyn LedgerStore,
    config: &Config,
    host: &HostIdentity,
    which: &InterruptWhich,
) -> Result<Vec<(ledger_core::Slot, InterruptVerdict)>, WatchdogError> {
    if let InterruptWhich::Role(role) = which
        && !config.roles.contains_key(role)
    {
        let known: Vec<&str> = config.roles.keys().map(String::as_str).collect();
        return Err(WatchdogError::Usage(format!(
            "--role: {role:?} is not a [roles.NAME] of the configuration (roles: {})",
            known.join(", ")
        )));
    }
    let mut done = Vec::new();
    for slot in ledger.open_slots()? {
        let holder = &slot.owner;
        let matches = match which {
            InterruptWhich::Task(task) => slot.key.task_id.as_str() == task,
            InterruptWhich::Role(role) => holder.role.as_deref() == Some(role.as_str()),
            InterruptWhich::All => true,
        };
        if !matches {
            continue;
        }
        let verdict = if holder.keeper.is_none() {
            InterruptVerdict::NoKeeper
        } else if holder.host != host.host || holder.boot_id != host.boot_id {
            InterruptVerdict::Elsewhere
        } else if holder.outcome.is_some()
            || !runtime::signal_process(&holder.runner, libc::SIGTERM)?
        {
            InterruptVerdict::Ended
        } else {
            InterruptVerdict::Signalled
        };
        done.push((slot, verdict));
    }
    match which {
        InterruptWhich::Task(_) | InterruptWhich::Role(_) if done.is_empty() => {
            Err(WatchdogError::NothingToInterrupt(which.to_string()))
        }
        _ => Ok(done),
    }
}

/// `watchdog interrupt`'s line for one slot.
pub fn interrupt_text(slot: &ledger_core::Slot, verdict: &InterruptVerdict) -> String {
    let run = format!("{} (run {})", slot.key, slot.run_id);
    let holder = &slot.owner;
    match verdict {
        InterruptVerdict::Signalled => format!(
            "interrupting {run}: keeper pid {} stops its executor; the role's runner puts the task back",
            holder.runner.pid
        ),
        InterruptVerdict::Ended => {
            format!("not interrupted {run}: its keeper has ended; a runner reports its outcome")
        }
        InterruptVerdict::Elsewhere => format!(
            "not interrupted {run}: its keeper runs on host {}; run this command there",
            holder.host
        ),
        InterruptVerdict::NoKeeper => format!(
            "not interrupted {run}: runner pid {} holds it, not a keeper (a dispatch starting: try again in a moment)",
            holder.runner.pid
        ),
    }
}
