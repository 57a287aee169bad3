//! The inflight runner ("watcher"), as a library so tests can drive it
//! in-process; `main.rs` only parses arguments and wires real dependencies.
//!
//! One runner serves one role: it sweeps for orphans at start-up, then
//! takes the oldest task in its claim state, admits it in the ledger, marks
//! it running in Plane, runs the backend's executor, reports the outcome to
//! Plane and finishes the slot — on every path.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(config: runtime::Config) -> Result<(), watcher_bin::WatcherError> {
//! let runner = watcher_bin::Runner::new(config, "goal", false)?;
//! // Runs until Ctrl-C, then stops claiming, interrupts the executor and
//! // puts its task back.
//! let summary = runner.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{} dispatches", summary.dispatched);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod output;
mod spawn;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::{
    AdmitOutcome, AdmitRequest, Clock, Denial, DenyReason, EventKind, ExecutorIdentity,
    FinishReason, Ledger, Owner, ProcessIdentity, RunId, SlotGuard, SlotKey, SystemClock, TaskId,
};
use plane_client::{PlaneClient, PlaneError, WorkItem};
use reconcile::{StartupOptions, StartupOutcome};
use runtime::{
    BackendSettings, Config, ConfigError, FileStartupLock, HostIdentity, LedgerAdapter,
    LinuxProcessProbe, PlaneLookup, RoleSettings, html_escape, proc_stat, requeue_reclaimed,
    state_of, this_owner,
};
use tokio::sync::watch;

pub use output::OutputTail;
pub use spawn::{EXEC_GATE_ARG, Spawner, StartGate, run_exec_gate_if_asked, signal_group};

/// Why the runner could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatcherError {
    /// The configuration is unusable (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ledger could not be opened or written.
    #[error("ledger: {0}")]
    Ledger(#[from] ledger_core::LedgerError),
    /// Plane's client could not be built.
    #[error("plane: {0}")]
    Plane(#[from] PlaneError),
    /// This host's identity or the executor spawner failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a run of the runner did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Executors started.
    pub dispatched: u32,
    /// Of those, exited 0.
    pub completed: u32,
    /// Slots reclaimed by the start-up sweep.
    pub reclaimed_at_startup: u32,
}

/// How one dispatch attempt ended.
enum Dispatch {
    /// The executor ran.
    Ran { completed: bool },
    /// This task is not for us after all (held by another run, moved on).
    Skipped,
    /// A cap refused it: wait for the poll interval.
    Capped(Denial),
    /// Plane or the ledger failed: back off.
    Failed(String),
    /// Shutdown arrived while the executor ran.
    Interrupted,
}

/// How the executor ended.
enum Ending {
    Exited(std::process::ExitStatus),
    TimedOut,
    Interrupted,
}

/// A runner for one role.
#[derive(Debug)]
pub struct Runner {
    config: Config,
    role: RoleSettings,
    backend: BackendSettings,
    ledger: Arc<Ledger>,
    plane: Arc<PlaneClient>,
    host: HostIdentity,
    owner: Owner,
    once: bool,
    poll_interval: Duration,
    /// When this runner was built, which is within milliseconds of the
    /// process starting: the origin of the restart-to-reclaim figure.
    created: Instant,
}

impl Runner {
    /// A runner for `role` of `config`: opens the ledger and builds the
    /// Plane client (reading the API key from the environment).
    pub fn new(config: Config, role: &str, once: bool) -> Result<Self, WatcherError> {
        let role = config.role(role)?.clone();
        let backend = config.backends[role.backend.as_str()].clone();
        let plane = Arc::new(PlaneClient::new(config.plane_config()?)?);
        let ledger = Arc::new(Ledger::open_with(
            &config.ledger.path,
            config.ledger_options(),
        )?);
        let host = HostIdentity::current()?;
        let mut owner = this_owner(&host)?;
        owner.role = Some(role.name.clone());
        Ok(Self {
            created: Instant::now(),
            poll_interval: config.watcher.poll_interval,
            config,
            role,
            backend,
            ledger,
            plane,
            host,
            owner,
            once,
        })
    }

    /// Overrides the configured poll interval (`--poll-interval`).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Runs until `shutdown` completes (or, with `--once`, after one claim
    /// cycle).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Summary, WatcherError> {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let spawner = Spawner::start()?;
        let mut summary = Summary {
            reclaimed_at_startup: self.startup_reconcile().await,
            ..Summary::default()
        };
        tracing::info!(role = %self.role.name, backend = %self.backend.name, claim_state = %self.role.claim_state, "claiming");
        let mut failures: u32 = 0;
        'cycles: loop {
            if *stop.borrow() {
                break;
            }
            let board = match self.board().await {
                Ok(board) => board,
                Err(error) => {
                    failures += 1;
                    let wait = self.backoff(failures);
                    tracing::warn!(%error, wait_secs = wait.as_secs(), "could not list the board; backing off");
                    if self.once || wait_or_stop(wait, stop.clone()).await {
                        break;
                    }
                    continue;
                }
            };
            failures = 0;
            self.repair_stuck(&board.stuck).await;
            let mut dispatched_this_cycle = false;
            for item in board.claimable {
                if *stop.borrow() {
                    break 'cycles;
                }
                match self.dispatch(&item, &spawner, stop.clone()).await {
                    Dispatch::Ran { completed } => {
                        summary.dispatched += 1;
                        summary.completed += u32::from(completed);
                        dispatched_this_cycle = true;
                        if self.once {
                            break 'cycles;
                        }
                    }
                    Dispatch::Skipped => {}
                    Dispatch::Capped(denial) => {
                        tracing::info!(%denial, "at capacity; waiting for the poll interval");
                        break;
                    }
                    Dispatch::Failed(error) => {
                        tracing::warn!(%error, "dispatch failed");
                        break;
                    }
                    Dispatch::Interrupted => break 'cycles,
                }
            }
            if self.once {
                break;
            }
            // After a dispatch the board has changed: look again at once.
            // Idle or capped: wait, rather than spend Plane's budget.
            if !dispatched_this_cycle && wait_or_stop(self.poll_interval, stop.clone()).await {
                break;
            }
        }
        tracing::info!(
            dispatched = summary.dispatched,
            completed = summary.completed,
            "runner stopped"
        );
        Ok(summary)
    }

    fn backoff(&self, failures: u32) -> Duration {
        (Duration::from_secs(1) * 2u32.saturating_pow(failures.min(16)))
            .min(self.poll_interval.max(Duration::from_secs(1)) * 4)
    }

    /// The start-up sweep, bounded in time and never fatal; reclaimed tasks
    /// still marked running in Plane go back on the board.
    async fn startup_reconcile(&self) -> u32 {
        let lock = FileStartupLock::new(&self.config.ledger.path);
        let ledger = LedgerAdapter(self.ledger.clone());
        let lookup = PlaneLookup(self.plane.clone());
        let probe = LinuxProcessProbe::new(self.host.clone(), self.config.watcher.grace);
        let mut options = StartupOptions::default();
        options.scan.window = self.config.ledger.window;
        let sweep = reconcile::reconcile_on_startup(
            &lock,
            &ledger,
            &lookup,
            &probe,
            &options,
            SystemClock.now(),
        );
        let report = match tokio::time::timeout(self.config.watcher.startup_reconcile, sweep).await
        {
            Ok(report) => report,
            Err(_) => {
                tracing::warn!(
                    limit_secs = self.config.watcher.startup_reconcile.as_secs(),
                    "start-up reconcile did not finish in time; starting anyway"
                );
                return 0;
            }
        };
        let StartupOutcome::Swept(scan) = report.outcome else {
            return 0;
        };
        let reclaimed = scan
            .actions
            .iter()
            .filter(|a| a.action == reconcile::Action::Applied)
            .count() as u32;
        if reclaimed > 0 {
            tracing::info!(
                reclaimed,
                restart_to_reclaim_ms = self.created.elapsed().as_millis() as u64,
                "reclaimed slots at start-up"
            );
            let requeued =
                requeue_reclaimed(&self.plane, &self.ledger, &self.config, &scan.actions).await;
            tracing::debug!(?requeued, "reclaimed tasks on the board");
        }
        reclaimed
    }

    /// One look at the board: the tasks in the role's claim state that
    /// carry all its labels, oldest first (one list serves several claims),
    /// and those sitting in its running state.
    async fn board(&self) -> Result<Board, PlaneError> {
        let items = self.plane.list_work_items().await?;
        let wanted_labels: Vec<String> = if self.role.labels.is_empty() {
            Vec::new()
        } else {
            let labels = self.plane.labels().await?;
            let mut ids = Vec::new();
            for name in &self.role.labels {
                match labels.iter().find(|l| same_state(&l.name, name)) {
                    Some(label) => ids.push(label.id.clone()),
                    None => {
                        tracing::warn!(label = %name, "the role's label does not exist in the project; nothing can match");
                        return Ok(Board::default());
                    }
                }
            }
            ids
        };
        let mut board = Board::default();
        for item in items {
            let state = state_of(&self.plane, &item).await?;
            let has_labels = wanted_labels
                .iter()
                .all(|id| item.labels.iter().any(|l| l.id() == id));
            if !has_labels {
                continue;
            }
            if same_state(&state.name, &self.role.claim_state) {
                board.claimable.push(item);
            } else if same_state(&state.name, &self.role.running_state) {
                board.stuck.push(item);
            }
        }
        board.claimable.sort_by_key(|item| item.created_at);
        Ok(board)
    }

    /// Tasks in the running state with no dispatch in flight were left there
    /// by a report that failed (Plane refused the last state change) or by a
    /// runner that died after finishing its slot and before reporting. The
    /// ledger knows how their last run of this role ended: report that.
    async fn repair_stuck(&self, items: &[WorkItem]) {
        let in_flight = |task: &TaskId| -> Option<bool> {
            match self.ledger.open_slots() {
                Ok(slots) => Some(slots.iter().any(|s| &s.key.task_id == task)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the open slots");
                    None
                }
            }
        };
        for item in items {
            let Ok(task) = TaskId::new(item.id.clone()) else {
                continue;
            };
            if in_flight(&task) != Some(false) {
                continue;
            }
            let key = SlotKey::new(self.backend.name.clone(), task.clone());
            let Ok(Some(last)) = self.ledger.last_finish(&key) else {
                continue;
            };
            let EventKind::Finished {
                run_id,
                reason,
                role,
                ..
            } = &last.kind
            else {
                continue;
            };
            if role.as_deref() != Some(self.role.name.as_str()) {
                continue;
            }
            // The list may be stale, and another runner may have taken the
            // task since: look again, at Plane and at the ledger.
            let Ok(fresh) = self.plane.get_work_item(task.as_str()).await else {
                continue;
            };
            let Ok(state) = state_of(&self.plane, &fresh).await else {
                continue;
            };
            if !same_state(&state.name, &self.role.running_state) || in_flight(&task) != Some(false)
            {
                continue;
            }
            let lost = self.ledger.attempts(&task).map(|a| a.lost()).unwrap_or(0);
            let target = match reason {
                FinishReason::Completed => &self.role.done_state,
                FinishReason::Failed | FinishReason::Expired => &self.role.blocked_state,
                _ if lost >= u64::from(self.role.max_attempts) => &self.role.blocked_state,
                _ => &self.role.claim_state,
            };
            tracing::warn!(task = %task, run = %run_id, %reason, state = %target, "task left in its running state with nothing in flight; reporting its last run");
            let comment = format!(
                "inflight: this task was left in {:?} with no dispatch in flight; its last run {run_id} ended: {reason}. Moved to {target}.",
                self.role.running_state
            );
            self.report(&task, target, &comment, None).await;
        }
    }

    async fn dispatch(
        &self,
        item: &WorkItem,
        spawner: &Spawner,
        stop: watch::Receiver<bool>,
    ) -> Dispatch {
        let clock = SystemClock;
        let Ok(task) = TaskId::new(item.id.clone()) else {
            return Dispatch::Skipped;
        };
        let Some(limits) = self.config.limits_for(&self.backend.name) else {
            return Dispatch::Failed(format!("backend {} has no limits", self.backend.name));
        };
        let key = SlotKey::new(self.backend.name.clone(), task.clone());
        let run_id = RunId::generate(clock.now());
        let request = AdmitRequest {
            key: key.clone(),
            run_id: run_id.clone(),
            owner: self.owner.clone(),
            lease: self.config.watcher.lease,
        };
        let slot = match self.ledger.admit(&request, &limits, clock.now()) {
            Ok(AdmitOutcome::Admitted(slot)) => slot,
            Ok(AdmitOutcome::Denied(denial)) if denial.reason == DenyReason::AlreadyInFlight => {
                return Dispatch::Skipped;
            }
            Ok(AdmitOutcome::Denied(denial)) => return Dispatch::Capped(denial),
            // Never claim what cannot be recorded.
            Err(e) => return Dispatch::Failed(format!("ledger: {e}")),
        };
        // From here every path finishes the slot; the guard covers panics.
        let guard = SlotGuard::new(&self.ledger, &slot, &clock);
        let not_started = |why: String| {
            tracing::info!(task = %task, run = %run_id, why, "released before starting");
            why
        };

        // Another runner may have taken, and even finished, the task since
        // the list was read.
        match self.plane.get_work_item(task.as_str()).await {
            Ok(fresh) => match state_of(&self.plane, &fresh).await {
                Ok(state) if same_state(&state.name, &self.role.claim_state) => {}
                Ok(state) => {
                    not_started(format!("the task is now in {:?}", state.name));
                    finish(guard, FinishReason::NotStarted);
                    return Dispatch::Skipped;
                }
                Err(e) => {
                    finish(guard, FinishReason::NotStarted);
                    return Dispatch::Failed(not_started(format!(
                        "could not read the task's state: {e}"
                    )));
                }
            },
            Err(PlaneError::NotFound { .. }) => {
                not_started("the task is gone".into());
                finish(guard, FinishReason::NotStarted);
                return Dispatch::Skipped;
            }
            Err(e) => {
                finish(guard, FinishReason::NotStarted);
                return Dispatch::Failed(not_started(format!("could not re-read the task: {e}")));
            }
        }
        if let Err(e) = self
            .plane
            .set_state(task.as_str(), &self.role.running_state)
            .await
        {
            finish(guard, FinishReason::NotStarted);
            return Dispatch::Failed(not_started(format!("could not mark the task running: {e}")));
        }

        let started = Instant::now();
        let spawned = async {
            let mut command = spawner.command(&self.program(), &self.backend.command[1..])?;
            command
                .current_dir(&self.config.dir)
                .env("INFLIGHT_TASK_ID", task.as_str())
                .env("INFLIGHT_RUN_ID", run_id.as_str())
                .env("INFLIGHT_BACKEND", self.backend.name.as_str())
                .env("INFLIGHT_ROLE", &self.role.name)
                .env("INFLIGHT_TASK_NAME", &item.name)
                // The executor has no business with Plane's key.
                .env_remove(&self.config.plane.api_key_env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            spawner.spawn(command).await
        };
        let (mut child, gate) = match spawned.await {
            Ok(spawned) => spawned,
            Err(e) => {
                let why = format!(
                    "could not start the executor {:?}: {e}",
                    self.backend.command[0]
                );
                tracing::error!(task = %task, run = %run_id, %why);
                self.report(
                    &task,
                    &self.role.blocked_state,
                    &format!("inflight: run {run_id} {why}."),
                    None,
                )
                .await;
                finish(guard, FinishReason::Failed);
                return Dispatch::Ran { completed: false };
            }
        };
        let pid = child.id().unwrap_or(0);
        let executor = ExecutorIdentity {
            process: ProcessIdentity {
                pid,
                start_time: proc_stat(pid).ok().flatten().map_or(0, |s| s.start_time),
            },
            process_group: pid,
        };
        // Recorded before the executor may start (it waits at its gate), so
        // a reclaim after this runner's death always finds its group.
        if let Err(e) = self.ledger.set_executor(&key, &run_id, executor.clone()) {
            tracing::warn!(task = %task, run = %run_id, error = %e, "could not record the executor");
        }
        if let Err(e) = gate.open() {
            // The gate is gone, so the executor is too; its exit is reported
            // like any other.
            tracing::warn!(task = %task, run = %run_id, error = %e, "could not open the executor's start gate");
        }
        tracing::info!(task = %task, run = %run_id, pid, name = %item.name, "executor started");
        let output = OutputTail::follow(&mut child, task.as_str());

        let ending = self.supervise(&mut child, &key, &run_id, stop).await;
        // Whatever the executor left behind in its group goes with it.
        let grace = self.config.watcher.grace;
        let leftovers = executor.clone();
        let _ =
            tokio::task::spawn_blocking(move || runtime::terminate_group(&leftovers, grace)).await;
        let took = started.elapsed();
        let (target, reason, verdict, completed) = match &ending {
            Ending::Exited(status) if status.success() => (
                &self.role.done_state,
                FinishReason::Completed,
                "completed (exit status 0)".to_owned(),
                true,
            ),
            Ending::Exited(status) => (
                &self.role.blocked_state,
                FinishReason::Failed,
                describe_exit(status),
                false,
            ),
            Ending::TimedOut => (
                &self.role.blocked_state,
                FinishReason::Failed,
                format!(
                    "timed out after {}s and was stopped",
                    self.backend.timeout.as_secs()
                ),
                false,
            ),
            Ending::Interrupted => (
                &self.role.claim_state,
                FinishReason::Interrupted,
                "was interrupted: the runner is shutting down".to_owned(),
                false,
            ),
        };
        tracing::info!(task = %task, run = %run_id, took_ms = took.as_millis() as u64, %verdict, "executor ended");
        let comment = format!(
            "inflight: run {run_id} on backend {} {verdict} after {:.1}s.",
            self.backend.name,
            took.as_secs_f64()
        );
        // Plane first, then the ledger: if the runner dies in between, the
        // open slot of a dead owner is reclaimed; the other way round, the
        // task would sit in its running state with nothing to notice it.
        // A failed run's comment carries the end of its output, bounded and
        // sanitised; a successful one's does not.
        let tail = if completed { None } else { output.render() };
        self.report(&task, target, &comment, tail.as_deref()).await;
        finish(guard, reason);
        match ending {
            Ending::Interrupted => Dispatch::Interrupted,
            _ => Dispatch::Ran { completed },
        }
    }

    /// The executor's program: relative paths resolve against the
    /// configuration's folder, bare names through `PATH`.
    fn program(&self) -> std::path::PathBuf {
        let program = std::path::Path::new(&self.backend.command[0]);
        if program.components().count() > 1 && program.is_relative() {
            self.config.dir.join(program)
        } else {
            program.to_path_buf()
        }
    }

    /// Waits for the executor, renewing the lease, enforcing the timeout and
    /// answering shutdown.
    async fn supervise(
        &self,
        child: &mut tokio::process::Child,
        key: &SlotKey,
        run_id: &RunId,
        mut stop: watch::Receiver<bool>,
    ) -> Ending {
        let pid = child.id().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + self.backend.timeout;
        let lease = self.config.watcher.lease;
        let mut renew = tokio::time::interval(lease / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                status = child.wait() => {
                    return match status {
                        Ok(status) => Ending::Exited(status),
                        Err(e) => {
                            tracing::error!(error = %e, "lost track of the executor");
                            Ending::Exited(std::os::unix::process::ExitStatusExt::from_raw(1 << 8))
                        }
                    };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(pid, timeout_secs = self.backend.timeout.as_secs(), "executor timed out");
                    self.stop_executor(child, pid).await;
                    return Ending::TimedOut;
                }
                _ = renew.tick() => {
                    let until = SystemClock.now().saturating_add(lease);
                    if let Err(e) = self.ledger.renew_lease(key, run_id, until) {
                        tracing::warn!(error = %e, "could not renew the lease");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        tracing::info!(pid, "shutting down: stopping the executor");
                        self.stop_executor(child, pid).await;
                        return Ending::Interrupted;
                    }
                }
            }
        }
    }

    /// SIGTERM to the executor's group, the grace period, then SIGKILL.
    async fn stop_executor(&self, child: &mut tokio::process::Child, group: u32) {
        signal_group(group, libc::SIGTERM);
        if tokio::time::timeout(self.config.watcher.grace, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(group, "executor ignored SIGTERM; killing it");
            signal_group(group, libc::SIGKILL);
            let _ = child.wait().await;
        }
    }

    /// Moves the task and comments on it; failures are logged, not fatal:
    /// the slot is finished regardless.
    async fn report(&self, task: &TaskId, state: &str, comment: &str, output: Option<&str>) {
        if let Err(e) = self.plane.set_state(task.as_str(), state).await {
            tracing::error!(task = %task, state, error = %e, "could not move the task");
        }
        let mut html = format!("<p>{}</p>", html_escape(comment));
        if let Some(output) = output {
            html.push_str(&format!(
                "<p>Last lines of its output:</p><pre>{}</pre>",
                html_escape(output)
            ));
        }
        if let Err(e) = self.plane.post_comment(task.as_str(), &html).await {
            tracing::warn!(task = %task, error = %e, "could not comment on the task");
        }
    }
}

/// What one look at the board found.
#[derive(Debug, Default)]
struct Board {
    claimable: Vec<WorkItem>,
    stuck: Vec<WorkItem>,
}

/// State names are matched trimmed and case-insensitively, as configured.
fn same_state(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn finish(guard: SlotGuard<'_>, reason: FinishReason) {
    let key = guard.key().clone();
    if let Err(e) = guard.finish(reason) {
        // The slot stays open and is reclaimed by the orphan rules.
        tracing::error!(slot = %key, error = %e, "could not finish the slot");
    }
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("failed with exit status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended for an unknown reason".to_owned(),
    }
}

/// Sleeps for `wait` unless stopped first; true when stopped.
async fn wait_or_stop(wait: Duration, mut stop: watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}
