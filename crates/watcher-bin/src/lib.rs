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

mod launch;
mod leases;
mod output;
mod spawn;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leases::{Leases, Lost};
use ledger_core::{
    AdmitOutcome, AdmitRequest, Clock, Denial, DenyReason, EventKind, ExecutorIdentity,
    FinishReason, LedgerStore, Owner, RunId, SlotGuard, SlotKey, SystemClock, TaskId,
    UpdateOutcome,
};
use plane_client::{PlaneError, WorkItem, same_name};
use reconcile::{ProcessProbe, StartupOptions, StartupOutcome};
use runtime::{
    BackendSettings, Config, ConfigError, HostIdentity, LedgerAdapter, LinuxProcessProbe, Plane,
    PlaneLookup, RoleProblem, RoleSettings, SharedBoard, StoreStartupLock, check_role, html_escape,
    on_store, open_store, requeue_reclaimed, state_of, this_owner,
};
use tokio::sync::watch;
// Tokio's clock, so that every wait of the runner follows a paused clock in
// tests; the ledger's timestamps come from `Dependencies::clock`.
use tokio::time::Instant;

pub use launch::{Executor, Launch, LaunchFuture, Launcher};
pub use output::OutputTail;
pub use spawn::{EXEC_GATE_ARG, Spawner, StartGate, run_exec_gate_if_asked};

/// Why the runner could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatcherError {
    /// The configuration is unusable (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ledger store could not be opened or written.
    #[error("ledger: {0}")]
    Store(#[from] ledger_core::LedgerError),
    /// Plane's client could not be built.
    #[error("plane: {0}")]
    Plane(#[from] PlaneError),
    /// This host's identity or the executor spawner failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The role names states or labels the Plane project does not have
    /// (exit status 2, like any other configuration error).
    #[error("role {role}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Role {
        /// The role.
        role: String,
        /// Each name that does not resolve.
        problems: Vec<RoleProblem>,
    },
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
    /// Shutdown arrived, before the executor started or while it ran.
    Interrupted { ran: bool },
}

/// The dispatch under way: its task, slot and run.
struct Run {
    task: TaskId,
    key: SlotKey,
    id: RunId,
}

/// A run whose slot is open: what tells it the slot was lost.
type Held = tokio::sync::watch::Receiver<Option<Lost>>;

/// A dispatch that ends before its executor starts: why, and what the run
/// loop makes of it.
struct Released {
    why: String,
    outcome: fn(String) -> Dispatch,
}

impl Released {
    fn shutting_down() -> Self {
        Self {
            why: "shutting down".into(),
            outcome: |_| Dispatch::Interrupted { ran: false },
        }
    }

    fn skipped(why: String) -> Self {
        Self {
            why,
            outcome: |_| Dispatch::Skipped,
        }
    }

    fn failed(why: String) -> Self {
        Self {
            why,
            outcome: Dispatch::Failed,
        }
    }
}

/// The executor of a run after its start: running since `at`, or never
/// launched (a failed run).
enum Started {
    Running {
        executor: Box<dyn Executor>,
        identity: ExecutorIdentity,
        at: Instant,
    },
    NotLaunched {
        why: String,
    },
}

/// How the executor ended.
enum Ending {
    Exited(std::process::ExitStatus),
    TimedOut,
    Interrupted,
    /// Stopped because its slot is no longer this runner's (reclaimed) or
    /// its lease could not be renewed in time.
    LeaseLost(Lost),
}

/// What a runner works with. [`Runner::new`] wires the real ones (the
/// configured store, Plane's HTTP client, `/proc`, forked processes, the
/// wall clock); tests hand it others.
#[allow(missing_debug_implementations)]
pub struct Dependencies {
    /// The ledger.
    pub store: Arc<dyn LedgerStore>,
    /// The Plane project.
    pub plane: Arc<dyn Plane>,
    /// Whether a slot's owner is alive, for the start-up sweep.
    pub probe: Arc<dyn ProcessProbe>,
    /// Starts executors.
    pub launcher: Arc<dyn Launcher>,
    /// The ledger's timestamps (admissions, leases, finishes).
    pub clock: Arc<dyn Clock>,
}

/// A runner for one role.
pub struct Runner {
    config: Config,
    role: RoleSettings,
    backend: BackendSettings,
    ledger: Arc<dyn LedgerStore>,
    plane: Arc<dyn Plane>,
    probe: Arc<dyn ProcessProbe>,
    launcher: Arc<dyn Launcher>,
    clock: Arc<dyn Clock>,
    owner: Owner,
    once: bool,
    poll_interval: Duration,
    /// When this runner was built, which is within milliseconds of the
    /// process starting: the origin of the restart-to-reclaim figure.
    created: Instant,
    /// The slots this runner holds, renewed together.
    leases: Arc<Leases>,
    /// Repairs of stuck tasks that Plane refused, by task: retried with a
    /// growing delay instead of at every look at the board.
    repairs: Mutex<HashMap<TaskId, Refused>>,
    /// The board every runner sharing the store looks at.
    board: SharedBoard,
    /// With webhooks on: the newest board hint read.
    last_hint: AtomicU64,
    /// Work items a webhook said entered the claim state, not yet tried.
    hinted: Mutex<Vec<WorkItem>>,
    /// What this runner tells Prometheus.
    metrics: Arc<runtime::Metrics>,
}

/// How often a runner with webhooks on reads the board's hints while it
/// waits: a delivery reaches its executor well within a second.
const HINT_POLL: Duration = Duration::from_millis(200);

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("role", &self.role.name)
            .field("backend", &self.backend.name)
            .field("store", &self.ledger.location())
            .field("plane", &self.plane)
            .field("launcher", &self.launcher)
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

/// A repair that Plane refused, and when to try it again.
#[derive(Debug, Clone, Copy)]
struct Refused {
    times: u32,
    retry_at: Instant,
}

/// Once shutdown has begun, what the runner still tells Plane (the task put
/// back, its comment) gets this long in all, whatever Plane is doing: a
/// deploy's SIGTERM must not wait out a rate-limit window. What does not
/// get through is repaired by the next runner's look at the board.
const SHUTDOWN_PLANE_ALLOWANCE: Duration = Duration::from_millis(1500);

/// The longest a refused repair waits before it is tried again.
const MAX_REPAIR_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// Runs `call` unless shutdown comes first. Dropping the call cancels
/// every wait inside it (the pacer's, a backoff's, a `Retry-After`'s, the
/// request itself); `None` means shutdown won.
async fn unless_stopped<T>(
    stop: &watch::Receiver<bool>,
    call: impl Future<Output = T>,
) -> Option<T> {
    let mut stop = stop.clone();
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        // A result that is ready as shutdown arrives is still used: it
        // happened.
        biased;
        out = call => Some(out),
        stopped = stop.wait_for(|s| *s) => match stopped {
            Ok(_) => None,
            // The sender is only dropped after sending `true`.
            Err(_) => std::future::pending().await,
        },
    }
}

impl Runner {
    /// A runner for `role` of `config` with the real dependencies: opens
    /// the ledger, builds the Plane client (reading the API key from the
    /// environment) and starts the executor spawner, whose start gate is
    /// this binary (see [`Spawner::start`]). Call it inside a tokio runtime.
    pub fn new(config: Config, role: &str, once: bool) -> Result<Self, WatcherError> {
        let host = HostIdentity::current()?;
        let store = open_store(&config)?;
        // A role with a key of its own draws on that key's budget.
        let plane_config = config.plane_config_for(config.role(role)?)?;
        let metrics = runtime::Metrics::new();
        let dependencies = Dependencies {
            plane: Arc::new(runtime::plane_client(plane_config, &store, &metrics)?),
            store,
            probe: Arc::new(LinuxProcessProbe::new(host, config.watcher.grace)),
            launcher: Arc::new(Spawner::start()?),
            clock: Arc::new(SystemClock),
        };
        Ok(Self::with_dependencies(config, role, once, dependencies)?.with_metrics(metrics))
    }

    /// Counts into `metrics` from now on (see [`Runner::metrics`]).
    pub fn with_metrics(mut self, metrics: Arc<runtime::Metrics>) -> Self {
        self.leases = Arc::new(Leases::new(
            self.ledger.clone(),
            self.clock.clone(),
            self.owner.clone(),
            self.config.lease(),
            self.config.renew_interval(),
            self.config.watcher.grace,
            metrics.clone(),
        ));
        self.metrics = metrics;
        self
    }

    /// What this runner counts, for `--metrics-addr`.
    pub fn metrics(&self) -> Arc<runtime::Metrics> {
        self.metrics.clone()
    }

    /// Where a scrape of this runner reads the ledger's side from.
    pub fn ledger_side(&self) -> runtime::LedgerSide {
        runtime::LedgerSide {
            store: self.ledger.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            probe: Some(self.probe.clone()),
        }
    }

    /// A runner for `role` of `config` working with `dependencies`.
    pub fn with_dependencies(
        config: Config,
        role: &str,
        once: bool,
        dependencies: Dependencies,
    ) -> Result<Self, WatcherError> {
        let (role, backend) = config.role_and_backend(role)?;
        let (role, backend) = (role.clone(), backend.clone());
        let host = HostIdentity::current()?;
        let mut owner = this_owner(&host)?;
        owner.role = Some(role.name.clone());
        owner.project = Some(config.project());
        let Dependencies {
            store,
            plane,
            probe,
            launcher,
            clock,
        } = dependencies;
        let metrics = runtime::Metrics::new();
        let leases = Arc::new(Leases::new(
            store.clone(),
            clock.clone(),
            owner.clone(),
            config.lease(),
            config.renew_interval(),
            config.watcher.grace,
            metrics.clone(),
        ));
        let board = SharedBoard::new(
            &config,
            store.clone(),
            clock.clone(),
            config.watcher.poll_interval,
        );
        Ok(Self {
            created: Instant::now(),
            poll_interval: config.watcher.poll_interval,
            board,
            last_hint: AtomicU64::new(0),
            hinted: Mutex::new(Vec::new()),
            metrics,
            leases,
            config,
            role,
            backend,
            ledger: store,
            plane,
            probe,
            launcher,
            clock,
            owner,
            once,
            repairs: Mutex::new(HashMap::new()),
        })
    }

    /// Overrides the configured poll interval (`--poll-interval`).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self.board = SharedBoard::new(
            &self.config,
            self.ledger.clone(),
            self.clock.clone(),
            interval,
        );
        self
    }

    /// Runs until `shutdown` completes (or, with `--once`, after one claim
    /// cycle).
    ///
    /// With `--once`, a failure to look at the board is an error (exit
    /// status 1) and a role whose names the project lacks is a
    /// configuration error (exit status 2); without it, both are logged and
    /// retried, the first with a backoff, the second at every re-check.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Summary, WatcherError> {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        // Leases are kept from the start: a slot is held from its admission,
        // long before its executor runs.
        let keeper = tokio::spawn(self.leases.clone().keep(stop.clone()));
        if self.config.webhook.is_some() {
            // Hints from before this start are covered by its first look.
            let (_, last) = self.board.hints_after(u64::MAX).await;
            self.last_hint.store(last, Ordering::Relaxed);
        }
        let mut summary = Summary {
            reclaimed_at_startup: self.startup_reconcile(&stop).await,
            ..Summary::default()
        };
        tracing::info!(role = %self.role.name, backend = %self.backend.name, claim_state = %self.role.claim_state, "claiming");
        let mut failures: u32 = 0;
        'cycles: loop {
            if *stop.borrow() {
                break;
            }
            // Nothing is claimed while the role names a state or a label
            // the project lacks: every claim would fail after its admission.
            // The check reads the cached states and labels, so it costs a
            // request only when they expire, which is also when an
            // unresolved role is checked again.
            let checked = match unless_stopped(&stop, check_role(&*self.plane, &self.role)).await {
                None => break,
                Some(checked) => checked,
            };
            let board = match checked {
                Ok(problems) if !problems.is_empty() => {
                    let error = WatcherError::Role {
                        role: self.role.name.clone(),
                        problems,
                    };
                    if self.once {
                        return Err(error);
                    }
                    tracing::error!(%error, recheck_secs = self.config.plane.cache.as_secs(), "the role claims nothing until its names resolve");
                    if wait_or_stop(self.config.plane.cache, stop.clone()).await {
                        break;
                    }
                    continue;
                }
                Ok(_) => match unless_stopped(&stop, self.board()).await {
                    None => break,
                    Some(board) => board,
                },
                Err(error) => Err(error),
            };
            let board = match board {
                Ok(board) => board,
                Err(error) => {
                    if self.once {
                        return Err(WatcherError::Plane(error));
                    }
                    failures += 1;
                    let wait = self.backoff(failures);
                    tracing::warn!(%error, wait_secs = wait.as_secs(), "could not list the board; backing off");
                    if wait_or_stop(wait, stop.clone()).await {
                        break;
                    }
                    continue;
                }
            };
            failures = 0;
            if unless_stopped(&stop, self.repair_stuck(&board.stuck))
                .await
                .is_none()
            {
                break;
            }
            let mut dispatched_this_cycle = false;
            let hinted = board.hinted;
            for item in board.claimable {
                if *stop.borrow() {
                    break 'cycles;
                }
                match self.dispatch(&item, &stop).await {
                    Dispatch::Ran { completed } => {
                        summary.dispatched += 1;
                        summary.completed += u32::from(completed);
                        dispatched_this_cycle = true;
                        if self.once {
                            break 'cycles;
                        }
                        // This list is as old as the dispatch: other
                        // runners took some of it meanwhile. The next look
                        // (the shared snapshot, no Plane request) leaves
                        // out what they took.
                        break;
                    }
                    Dispatch::Skipped => {}
                    Dispatch::Capped(denial) => {
                        tracing::info!(%denial, "at capacity; waiting for the poll interval");
                        // Not tried: a hinted task is tried again next time.
                        if hinted.contains(&item.id) {
                            self.hint_again(item);
                        }
                        break;
                    }
                    Dispatch::Failed(error) => {
                        tracing::warn!(%error, "dispatch failed");
                        break;
                    }
                    Dispatch::Interrupted { ran } => {
                        summary.dispatched += u32::from(ran);
                        break 'cycles;
                    }
                }
            }
            if self.once {
                break;
            }
            // After a dispatch the board has changed: look again at once.
            // Idle or capped: wait, rather than spend Plane's budget.
            if !dispatched_this_cycle && self.wait_for_work(&stop).await {
                break;
            }
        }
        keeper.abort();
        tracing::info!(
            dispatched = summary.dispatched,
            completed = summary.completed,
            "runner stopped"
        );
        Ok(summary)
    }

    /// Waits for the poll interval, or with webhooks on until a hint names
    /// a task in this role's claim state; true when stopped.
    async fn wait_for_work(&self, stop: &watch::Receiver<bool>) -> bool {
        if self.config.webhook.is_none() {
            return wait_or_stop(self.poll_interval, stop.clone()).await;
        }
        let until = Instant::now() + self.poll_interval;
        loop {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            if wait_or_stop(HINT_POLL.min(until - now), stop.clone()).await {
                return true;
            }
            let (items, last) = self
                .board
                .hints_after(self.last_hint.load(Ordering::Relaxed))
                .await;
            self.last_hint.store(last, Ordering::Relaxed);
            if items.is_empty() {
                continue;
            }
            let Some(woken) = unless_stopped(stop, self.hinted_claimable(items)).await else {
                return true;
            };
            if woken {
                return false;
            }
        }
    }

    /// Keeps the hinted items this role would claim; whether there were any.
    async fn hinted_claimable(&self, items: Vec<WorkItem>) -> bool {
        let wanted = match self.classify(items).await {
            Ok(board) => board.claimable,
            Err(error) => {
                tracing::debug!(%error, "could not read a hinted task's state");
                return false;
            }
        };
        if wanted.is_empty() {
            return false;
        }
        tracing::info!(
            tasks = wanted.len(),
            "a webhook says work is waiting; looking now"
        );
        let mut hinted = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
        for item in wanted {
            hinted.retain(|held| held.id != item.id);
            hinted.push(item);
        }
        true
    }

    /// Puts a hinted item that could not be tried back for the next look.
    fn hint_again(&self, item: WorkItem) {
        let mut hinted = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
        if !hinted.iter().any(|held| held.id == item.id) {
            hinted.push(item);
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        (Duration::from_secs(1) * 2u32.saturating_pow(failures.min(16)))
            .min(self.poll_interval.max(Duration::from_secs(1)) * 4)
    }

    /// The start-up sweep, bounded in time, cancelled by shutdown and never
    /// fatal; reclaimed tasks still marked running in Plane go back on the
    /// board.
    async fn startup_reconcile(&self, stop: &watch::Receiver<bool>) -> u32 {
        let lock = StoreStartupLock(self.ledger.clone());
        let ledger = LedgerAdapter(self.ledger.clone());
        let lookup = PlaneLookup(self.plane.clone());
        let probe = self.probe.clone();
        let mut options = StartupOptions::default();
        options.scan.window = self.config.ledger.window;
        options.scan.project = Some(self.config.project());
        options.scan.lease_grace = self.config.watcher.grace;
        // The rules call their edges synchronously (the lock's wait, the
        // store, the process group's grace period), so the sweep runs on a
        // blocking thread, its Plane lookups driven by this runtime. The
        // time bound then holds whatever the store is doing: a sweep stuck
        // behind another process's write lock is left to finish on its own
        // (each reclaim is a conditional finish; a reclaimed task left in
        // its running state is repaired at a later look at the board).
        let runtime = tokio::runtime::Handle::current();
        let now = self.clock.now();
        let sweep = tokio::task::spawn_blocking(move || {
            runtime.block_on(reconcile::reconcile_on_startup(
                &lock, &ledger, &lookup, &*probe, &options, now,
            ))
        });
        let bounded = tokio::time::timeout(self.config.watcher.startup_reconcile, sweep);
        let report = match unless_stopped(stop, bounded).await {
            Some(Ok(Ok(report))) => report,
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "start-up reconcile failed; starting anyway");
                return 0;
            }
            Some(Err(_)) => {
                tracing::warn!(
                    limit_secs = self.config.watcher.startup_reconcile.as_secs(),
                    "start-up reconcile cut short: it did not finish in time; starting anyway"
                );
                return 0;
            }
            None => return 0,
        };
        let StartupOutcome::Swept(scan) = report.outcome else {
            return 0;
        };
        self.metrics.reclaimed_in(&scan);
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
            let requeue =
                requeue_reclaimed(&*self.plane, &self.ledger, &self.config, &scan.actions);
            // Cut short by shutdown, a reclaimed task left in its running
            // state is repaired by the next look at the board.
            let requeued = unless_stopped(stop, requeue).await;
            tracing::debug!(?requeued, "reclaimed tasks on the board");
        }
        reclaimed
    }

    /// One look at the board: the tasks in the role's claim state that
    /// carry all its labels, oldest first (one list serves several claims),
    /// and those sitting in its running state. The list is the shared
    /// snapshot (see [`SharedBoard`]): the tasks admitted or finished since
    /// it was listed are left out, as its word on them is stale, and the
    /// tasks a webhook named since are added, to be tried once.
    async fn board(&self) -> Result<Board, PlaneError> {
        let view = self.board.look(&*self.plane).await?;
        let hinted = std::mem::take(&mut *self.hinted.lock().unwrap_or_else(|e| e.into_inner()));
        let mut items: Vec<WorkItem> = view
            .items
            .into_iter()
            .filter(|item| {
                TaskId::new(item.id.clone()).is_ok_and(|task| !view.changed.contains(&task))
                    && hinted.iter().all(|h| h.id != item.id)
            })
            .collect();
        let hinted_ids = hinted.iter().map(|h| h.id.clone()).collect();
        items.extend(hinted);
        let mut board = self.classify(items).await?;
        board.hinted = hinted_ids;
        Ok(board)
    }

    /// Sorts `items` into the role's claimable (oldest first) and stuck.
    async fn classify(&self, items: Vec<WorkItem>) -> Result<Board, PlaneError> {
        let wanted_labels: Vec<String> = if self.role.labels.is_empty() {
            Vec::new()
        } else {
            let mut labels = self.plane.labels().await?;
            // A label id no cached label has means the labels changed (one
            // was deleted and re-created under the same name, say): list
            // them again, at most once per poll interval.
            let unknown = items
                .iter()
                .flat_map(|item| &item.labels)
                .any(|l| labels.iter().all(|known| known.id != l.id()));
            if unknown
                && self
                    .plane
                    .labels_age()
                    .is_none_or(|age| age >= self.poll_interval)
            {
                tracing::info!(
                    "a work item carries a label this runner does not know; listing the labels again"
                );
                labels = self.plane.refresh_labels().await?;
            }
            let mut ids = Vec::new();
            for name in &self.role.labels {
                match labels.iter().find(|l| same_name(&l.name, name)) {
                    Some(label) => ids.push(label.id.clone()),
                    // Gone since the role was checked: the next check says so.
                    None => return Ok(Board::default()),
                }
            }
            ids
        };
        let mut board = Board::default();
        for item in items {
            let state = state_of(&*self.plane, &item).await?;
            let has_labels = wanted_labels
                .iter()
                .all(|id| item.labels.iter().any(|l| l.id() == id));
            if !has_labels {
                continue;
            }
            if same_name(&state.name, &self.role.claim_state) {
                board.claimable.push(item);
            } else if same_name(&state.name, &self.role.running_state) {
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
    ///
    /// A repair that Plane refuses (a demoted key's user may comment but not
    /// move tasks) is tried again after a delay that doubles each time, and
    /// the task says so once; "moved" is written only after Plane moved it.
    async fn repair_stuck(&self, items: &[WorkItem]) {
        // A task that left the running state by other means (a person moved
        // it) needs no more repairs.
        self.repairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|task, _| items.iter().any(|item| item.id == task.as_str()));
        let in_flight = |task: &TaskId| {
            let task = task.clone();
            async move {
                match on_store(&self.ledger, |s| s.open_slots()).await {
                    Ok(slots) => Some(slots.iter().any(|s| s.key.task_id == task)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the open slots");
                        None
                    }
                }
            }
        };
        for item in items {
            let Ok(task) = TaskId::new(item.id.clone()) else {
                continue;
            };
            let refused = self.refused(&task);
            if refused.is_some_and(|r| r.retry_at > Instant::now()) {
                continue;
            }
            if in_flight(&task).await != Some(false) {
                continue;
            }
            let key = SlotKey::new(self.backend.name.clone(), task.clone());
            let Ok(Some(last)) = on_store(&self.ledger, move |s| s.last_finish(&key)).await else {
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
            let Ok(state) = state_of(&*self.plane, &fresh).await else {
                continue;
            };
            if !same_name(&state.name, &self.role.running_state)
                || in_flight(&task).await != Some(false)
            {
                continue;
            }
            // An unreadable count is not zero: leave the task for now.
            let counted = task.clone();
            let lost = match on_store(&self.ledger, move |s| s.attempts(&counted)).await {
                Ok(attempts) => attempts.lost(),
                Err(e) => {
                    tracing::warn!(task = %task, error = %e, "could not read the task's attempts; not repairing it now");
                    continue;
                }
            };
            let target = match reason {
                FinishReason::Completed => &self.role.done_state,
                FinishReason::Failed | FinishReason::Expired => &self.role.blocked_state,
                _ if lost >= u64::from(self.role.max_attempts) => &self.role.blocked_state,
                _ => &self.role.claim_state,
            };
            tracing::warn!(task = %task, run = %run_id, %reason, state = %target, "task left in its running state with nothing in flight; reporting its last run");
            let what = format!(
                "inflight: this task was left in {:?} with no dispatch in flight; its last run {run_id} ended: {reason}.",
                self.role.running_state
            );
            match self.plane.set_state(task.as_str(), target).await {
                Ok(_) => {
                    self.repaired(&task);
                    if self.config.watcher.comment.wants(true) {
                        self.comment(&task, &format!("{what} Moved to {target}."), None)
                            .await;
                    }
                }
                Err(e) => {
                    let times = refused.map_or(1, |r| r.times + 1);
                    let wait = self
                        .poll_interval
                        .saturating_mul(2u32.saturating_pow(times.min(16)))
                        .min(MAX_REPAIR_BACKOFF.max(self.poll_interval));
                    tracing::warn!(task = %task, state = %target, error = %e, times, retry_secs = wait.as_secs(), "Plane refused to move a stuck task; trying again later");
                    self.repairs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(
                            task.clone(),
                            Refused {
                                times,
                                retry_at: Instant::now() + wait,
                            },
                        );
                    if times == 1 && self.config.watcher.comment.wants(true) {
                        let text = format!(
                            "{what} Plane refused to move it to {target} ({e}); inflight will try again later."
                        );
                        self.comment(&task, &text, None).await;
                    }
                }
            }
        }
    }

    fn refused(&self, task: &TaskId) -> Option<Refused> {
        self.repairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(task)
            .copied()
    }

    fn repaired(&self, task: &TaskId) {
        self.repairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(task);
    }

    /// One task, from its admission to its slot's finish: admitted, marked
    /// running, its executor started and seen through to its end. Every
    /// path after the admission finishes the slot.
    async fn dispatch(&self, item: &WorkItem, stop: &watch::Receiver<bool>) -> Dispatch {
        let Ok(task) = TaskId::new(item.id.clone()) else {
            return Dispatch::Skipped;
        };
        let run = Run {
            key: SlotKey::new(self.backend.name.clone(), task.clone()),
            id: RunId::generate(self.clock.now()),
            task,
        };
        // Held from before the admission: a renewal that finds the slot
        // open knows it for this runner's even if the admission's answer
        // is lost (see `Leases::renew`).
        let held = self.leases.hold(&run.key, &run.id);
        let slot = match self.admit(&run).await {
            Ok(slot) => slot,
            Err(not_admitted) => {
                self.leases.release(&run.key);
                return not_admitted;
            }
        };
        self.leases.admitted(&run.key);
        // From here every path finishes the slot; the guard covers panics.
        let guard = SlotGuard::new(self.ledger.clone(), &slot, self.clock.clone());
        let started = match self.mark_running(&run, stop).await {
            Ok(()) => self.start_executor(item, &run, stop).await,
            Err(released) => Err(released),
        };
        match started {
            Ok(started) => self.see_through(started, &run, guard, held, stop).await,
            Err(Released { why, outcome }) => {
                tracing::info!(task = %run.task, run = %run.id, why, "released before starting");
                self.finish(guard, FinishReason::NotStarted).await;
                outcome(why)
            }
        }
    }

    /// Opens the run's slot if the caps allow it; otherwise what the run
    /// loop makes of the refusal.
    async fn admit(&self, run: &Run) -> Result<ledger_core::Slot, Dispatch> {
        if self.leases.at_risk() {
            return Err(Dispatch::Failed(
                "the ledger's leases cannot be renewed; admitting nothing until it answers".into(),
            ));
        }
        let Some(limits) = self.config.limits_for(&self.backend.name) else {
            return Err(Dispatch::Failed(format!(
                "backend {} has no limits",
                self.backend.name
            )));
        };
        let request = AdmitRequest {
            key: run.key.clone(),
            run_id: run.id.clone(),
            owner: self.owner.clone(),
            lease: self.config.lease(),
        };
        let clock = self.clock.clone();
        let asked = Instant::now();
        let answer = on_store(&self.ledger, move |s| {
            s.admit(&request, &limits, clock.now())
        })
        .await;
        match &answer {
            Ok(AdmitOutcome::Admitted(_)) => self
                .metrics
                .admitted(self.backend.name.as_str(), asked.elapsed()),
            Ok(AdmitOutcome::Denied(denial)) => {
                self.metrics
                    .denied(self.backend.name.as_str(), denial, asked.elapsed())
            }
            Err(_) => {}
        }
        match answer {
            Ok(AdmitOutcome::Admitted(slot)) => Ok(slot),
            Ok(AdmitOutcome::Denied(denial)) if denial.reason == DenyReason::AlreadyInFlight => {
                Err(Dispatch::Skipped)
            }
            Ok(AdmitOutcome::Denied(denial)) => Err(Dispatch::Capped(denial)),
            // Never claim what cannot be recorded.
            Err(e) => Err(Dispatch::Failed(format!("ledger: {e}"))),
        }
    }

    /// Moves the admitted task to the running state, if it is still in
    /// the claim state.
    async fn mark_running(&self, run: &Run, stop: &watch::Receiver<bool>) -> Result<(), Released> {
        let task = &run.task;
        // Another runner may have taken, and even finished, the task since
        // the list was read. Shutdown here leaves the task where it is: in
        // its claim state, untouched.
        let reread = async {
            let fresh = self.plane.get_work_item(task.as_str()).await?;
            state_of(&*self.plane, &fresh).await
        };
        match unless_stopped(stop, reread).await {
            None => return Err(Released::shutting_down()),
            Some(Ok(state)) if same_name(&state.name, &self.role.claim_state) => {}
            Some(Ok(state)) => {
                return Err(Released::skipped(format!(
                    "the task is now in {:?}",
                    state.name
                )));
            }
            Some(Err(PlaneError::NotFound { .. })) => {
                return Err(Released::skipped("the task is gone".into()));
            }
            Some(Err(e)) => {
                return Err(Released::failed(format!("could not re-read the task: {e}")));
            }
        }
        // Shutdown while the PATCH waits or flies: it may have reached
        // Plane, so the task is put back (a no-op if it did not).
        let marked = self
            .plane
            .set_state(task.as_str(), &self.role.running_state);
        match unless_stopped(stop, marked).await {
            Some(Ok(())) if !*stop.borrow() => Ok(()),
            Some(Err(e)) => Err(Released::failed(format!(
                "could not mark the task running: {e}"
            ))),
            Some(Ok(())) | None => {
                self.put_back(task, stop).await;
                Err(Released::shutting_down())
            }
        }
    }

    /// Launches the executor, records it in the slot, and only then lets it
    /// start. A launch that fails is a failed run (the task is blocked);
    /// one that cannot be recorded never starts.
    async fn start_executor(
        &self,
        item: &WorkItem,
        run: &Run,
        stop: &watch::Receiver<bool>,
    ) -> Result<Started, Released> {
        let (task, run_id) = (&run.task, &run.id);
        let at = Instant::now();
        let launch = self.launch(item, task, run_id);
        let mut executor = match self.launcher.launch(&launch).await {
            Ok(executor) => executor,
            Err(e) => {
                let why = format!(
                    "could not start the executor {:?}: {e}",
                    self.backend.program
                );
                tracing::error!(task = %task, run = %run_id, %why);
                return Ok(Started::NotLaunched { why });
            }
        };
        // Recorded before the executor may start (it waits at its gate), so
        // a reclaim after this runner's death always finds its group. No
        // record, no start: an executor that no slot names could outlive a
        // reclaim and run the task twice.
        let identity = match self.record_executor(&run.key, run_id, &*executor).await {
            Ok(identity) => identity,
            Err(why) => {
                // The closed gate makes the executor exit without running.
                executor.abandon();
                let _ = tokio::time::timeout(self.config.watcher.grace, executor.wait()).await;
                tracing::error!(task = %task, run = %run_id, %why, "the executor was not started");
                self.put_back(task, stop).await;
                return Err(Released::failed(why));
            }
        };
        if let Err(e) = executor.start() {
            // The gate is gone, so the executor is too; its exit is reported
            // like any other.
            tracing::warn!(task = %task, run = %run_id, error = %e, "could not open the executor's start gate");
        }
        tracing::info!(task = %task, run = %run_id, pid = identity.process.pid, name = %item.name, "executor started");
        Ok(Started::Running {
            executor,
            identity,
            at,
        })
    }

    /// Waits for a started executor to end, reports the outcome to Plane and
    /// finishes the slot.
    async fn see_through(
        &self,
        started: Started,
        run: &Run,
        guard: SlotGuard,
        held: Held,
        stop: &watch::Receiver<bool>,
    ) -> Dispatch {
        let (task, run_id) = (&run.task, &run.id);
        let (mut executor, identity, at) = match started {
            Started::Running {
                executor,
                identity,
                at,
            } => (executor, identity, at),
            Started::NotLaunched { why } => {
                // A failed run: the task is blocked.
                self.report(
                    task,
                    &self.role.blocked_state,
                    &format!("inflight: run {run_id} {why}."),
                    None,
                    true,
                    stop,
                )
                .await;
                self.finish(guard, FinishReason::Failed).await;
                return Dispatch::Ran { completed: false };
            }
        };
        let output = executor.output();
        let ending = self.supervise(&mut *executor, held, stop.clone()).await;
        // Whatever the executor left behind in its group goes with it.
        executor
            .clean_up(&identity, self.config.watcher.grace)
            .await;
        let took = at.elapsed().as_secs_f64();
        let Outcome {
            target,
            reason,
            verdict,
            completed,
        } = outcome(&ending, took, &self.role, self.backend.timeout);
        if let Ending::LeaseLost(_) = &ending {
            // Plane is left alone: a reclaimed task was put back by whoever
            // reclaimed it, and an unrenewable lease's slot is reclaimed,
            // and its task put back, once it runs out.
            tracing::warn!(task = %task, run = %run_id, took_ms = (took * 1000.0) as u64, %verdict, "executor stopped: its slot is no longer this runner's");
            self.finish(guard, reason).await;
            return Dispatch::Ran { completed: false };
        }
        tracing::info!(task = %task, run = %run_id, took_ms = (took * 1000.0) as u64, %verdict, "executor ended");
        let comment = format!(
            "inflight: run {run_id} on backend {} {verdict}.",
            self.backend.name
        );
        // Plane first, then the ledger: if the runner dies in between, the
        // open slot of a dead owner is reclaimed; the other way round, the
        // task would sit in its running state with nothing to notice it.
        // A failed run's comment carries the end of its output, bounded and
        // sanitised; a successful one's does not.
        let tail = if completed { None } else { output.render() };
        self.report(task, target, &comment, tail.as_deref(), !completed, stop)
            .await;
        self.finish(guard, reason).await;
        match ending {
            Ending::Interrupted => Dispatch::Interrupted { ran: true },
            _ => Dispatch::Ran { completed },
        }
    }

    /// What to run for `task`: the backend's command, with the dispatch's
    /// variables in its environment and without Plane's key.
    fn launch(&self, item: &WorkItem, task: &TaskId, run_id: &RunId) -> Launch {
        Launch {
            program: self.program(),
            args: self.backend.args.clone(),
            dir: self.config.dir.clone(),
            env: vec![
                ("INFLIGHT_TASK_ID", task.as_str().to_owned()),
                ("INFLIGHT_RUN_ID", run_id.as_str().to_owned()),
                ("INFLIGHT_BACKEND", self.backend.name.as_str().to_owned()),
                ("INFLIGHT_ROLE", self.role.name.clone()),
                ("INFLIGHT_TASK_NAME", item.name.clone()),
            ],
            // The executor has no business with Plane's keys, the
            // database's password or the webhook's secret.
            env_remove: self.config.secret_envs(),
            task: task.as_str().to_owned(),
        }
    }

    /// Records a spawned (gated) executor in its slot: its pid, its start
    /// time and its process group. An error says why it could not be
    /// recorded.
    async fn record_executor(
        &self,
        key: &SlotKey,
        run_id: &RunId,
        executor: &dyn Executor,
    ) -> Result<ExecutorIdentity, String> {
        let identity = executor.identity()?;
        let pid = identity.process.pid;
        let (key, run_id, record) = (key.clone(), run_id.clone(), identity.clone());
        match on_store(&self.ledger, move |s| s.set_executor(&key, &run_id, record)).await {
            Ok(UpdateOutcome::Updated) => Ok(identity),
            Ok(UpdateOutcome::NotInFlight) => Err(format!(
                "its slot is no longer open (released or reclaimed): the executor (pid {pid}) could not be recorded"
            )),
            Err(e) => Err(format!("could not record the executor (pid {pid}): {e}")),
        }
    }

    /// The executor's program: relative paths resolve against the
    /// configuration's folder, bare names through `PATH`.
    fn program(&self) -> std::path::PathBuf {
        let program = std::path::Path::new(&self.backend.program);
        if program.components().count() > 1 && program.is_relative() {
            self.config.dir.join(program)
        } else {
            program.to_path_buf()
        }
    }

    /// Waits for the executor, enforcing the timeout, answering shutdown,
    /// and stopping it at once if its slot is lost (leases are renewed for
    /// every slot together, by [`Leases`]).
    async fn supervise(
        &self,
        executor: &mut dyn Executor,
        mut held: Held,
        mut stop: watch::Receiver<bool>,
    ) -> Ending {
        let deadline = tokio::time::Instant::now() + self.backend.timeout;
        loop {
            if let Some(lost) = held.borrow_and_update().clone() {
                tracing::warn!(
                    ?lost,
                    "stopping the executor: its slot is no longer this runner's"
                );
                self.stop_executor(executor).await;
                return Ending::LeaseLost(lost);
            }
            tokio::select! {
                status = executor.wait() => {
                    return match status {
                        Ok(status) => Ending::Exited(status),
                        Err(e) => {
                            tracing::error!(error = %e, "lost track of the executor");
                            Ending::Exited(std::os::unix::process::ExitStatusExt::from_raw(1 << 8))
                        }
                    };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(timeout_secs = self.backend.timeout.as_secs(), "executor timed out");
                    self.stop_executor(executor).await;
                    return Ending::TimedOut;
                }
                _ = held.changed() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        tracing::info!("shutting down: stopping the executor");
                        self.stop_executor(executor).await;
                        return Ending::Interrupted;
                    }
                }
            }
        }
    }

    /// SIGTERM to the executor's group, the grace period, then SIGKILL.
    async fn stop_executor(&self, executor: &mut dyn Executor) {
        let signal = |executor: &dyn Executor, signal| {
            if let Err(e) = executor.signal(signal) {
                tracing::warn!(signal, error = %e, "could not signal the executor's group");
            }
        };
        signal(executor, libc::SIGTERM);
        if tokio::time::timeout(self.config.watcher.grace, executor.wait())
            .await
            .is_err()
        {
            tracing::warn!("executor ignored SIGTERM; killing it");
            signal(executor, libc::SIGKILL);
            let _ = executor.wait().await;
        }
    }

    /// Puts a task whose dispatch did not start back into the claim state,
    /// without a comment. Bounded once shutdown has begun; a task left in
    /// its running state is repaired at the next look at the board.
    async fn put_back(&self, task: &TaskId, stop: &watch::Receiver<bool>) {
        let moved = self.plane.set_state(task.as_str(), &self.role.claim_state);
        match self.bounded_at_shutdown(stop, moved).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(task = %task, error = %e, "could not put the task back in its claim state")
            }
            None => {
                tracing::warn!(task = %task, "shutting down before the task was put back; the next look at the board repairs it")
            }
        }
    }

    /// Moves the task and comments on it, saying whether the move went
    /// through. Failures are logged, not fatal: the slot is finished
    /// regardless. Once shutdown has begun, both together are bounded.
    async fn report(
        &self,
        task: &TaskId,
        state: &str,
        comment: &str,
        output: Option<&str>,
        failure: bool,
        stop: &watch::Receiver<bool>,
    ) {
        let work = async {
            let (moved, refused) = match self.plane.set_state(task.as_str(), state).await {
                Ok(_) => (format!(" Moved to {state}."), false),
                Err(e) => {
                    tracing::error!(task = %task, state, error = %e, "could not move the task");
                    (format!(" Plane refused to move it to {state}: {e}."), true)
                }
            };
            if self.config.watcher.comment.wants(failure || refused) {
                self.comment(task, &format!("{comment}{moved}"), output)
                    .await;
            }
        };
        if self.bounded_at_shutdown(stop, work).await.is_none() {
            tracing::warn!(task = %task, state, "shutting down before the outcome reached Plane; the next look at the board repairs it");
        }
    }

    /// Posts a comment (HTML-escaped), with the tail of the executor's
    /// output when there is one.
    async fn comment(&self, task: &TaskId, text: &str, output: Option<&str>) {
        let mut html = format!("<p>{}</p>", html_escape(text));
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

    /// Finishes a guarded slot on a blocking thread (a durable commit). A
    /// finish the store refuses is tried again at each lease renewal, so a
    /// slot is closed once the store answers again.
    async fn finish(&self, guard: SlotGuard, reason: FinishReason) {
        let (key, run) = (guard.key().clone(), guard.run_id().clone());
        let why = reason.clone();
        let finished = tokio::task::spawn_blocking(move || guard.finish(why)).await;
        self.leases.release(&key);
        match finished {
            Ok(Ok(ledger_core::FinishOutcome::Finished(slot))) => {
                let held = self.clock.now().duration_since(slot.started_at);
                self.metrics
                    .finished(slot.key.backend.as_str(), reason, held);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(slot = %key, error = %e, "could not finish the slot; trying again at the next renewal");
                self.leases.finish_later(key, run, reason);
            }
            Err(e) => tracing::error!(slot = %key, error = %e, "could not finish the slot"),
        }
    }

    /// Runs `work` to its end, or, once shutdown has begun, for at most
    /// [`SHUTDOWN_PLANE_ALLOWANCE`] (`None`: it was cut short).
    async fn bounded_at_shutdown<T>(
        &self,
        stop: &watch::Receiver<bool>,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        match unless_stopped(stop, &mut work).await {
            Some(out) => Some(out),
            None => tokio::time::timeout(SHUTDOWN_PLANE_ALLOWANCE, work)
                .await
                .ok(),
        }
    }
}

/// Where a run's task goes, how its slot is finished, and what its comment
/// says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome<'a> {
    target: &'a str,
    reason: FinishReason,
    verdict: String,
    completed: bool,
}

/// The outcome of a run that ended this way after `took` seconds: a
/// function over data, so the comment's wording is tested without a run.
fn outcome<'a>(
    ending: &Ending,
    took: f64,
    role: &'a RoleSettings,
    timeout: Duration,
) -> Outcome<'a> {
    let (target, reason, verdict, completed) = match ending {
        Ending::Exited(status) if status.success() => (
            &role.done_state,
            FinishReason::Completed,
            format!("completed (exit status 0) after {took:.1}s"),
            true,
        ),
        Ending::Exited(status) => (
            &role.blocked_state,
            FinishReason::Failed,
            format!("{} after {took:.1}s", describe_exit(status)),
            false,
        ),
        Ending::TimedOut => (
            &role.blocked_state,
            FinishReason::Failed,
            format!(
                "reached its timeout (timeout_secs = {}) and was stopped after {took:.1}s",
                timeout.as_secs()
            ),
            false,
        ),
        Ending::Interrupted => (
            &role.claim_state,
            FinishReason::Interrupted,
            format!("was interrupted after {took:.1}s: the runner is shutting down"),
            false,
        ),
        Ending::LeaseLost(lost) => (
            &role.claim_state,
            FinishReason::Interrupted,
            match lost {
                Lost::Reclaimed => format!("was stopped after {took:.1}s: its slot was reclaimed"),
                Lost::Unrenewable => {
                    format!("was stopped after {took:.1}s: its lease could not be renewed")
                }
            },
            false,
        ),
    };
    Outcome {
        target,
        reason,
        verdict,
        completed,
    }
}

/// What one look at the board found.
#[derive(Debug, Default)]
struct Board {
    claimable: Vec<WorkItem>,
    stuck: Vec<WorkItem>,
    /// The ids of the claimable items a webhook named.
    hinted: Vec<String>,
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
async fn wait_or_stop(wait: Duration, stop: watch::Receiver<bool>) -> bool {
    unless_stopped(&stop, tokio::time::sleep(wait))
        .await
        .is_none()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

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

    /// Each ending's state, finish reason and words: the limit named once,
    /// the duration once.
    #[test]
    fn every_ending_has_its_outcome() {
        let role = role();
        let limit = Duration::from_secs(4);
        let of = |ending: Ending| outcome(&ending, 4.04, &role, limit);
        let exited = |code: i32| Ending::Exited(std::process::ExitStatus::from_raw(code << 8));
        assert_eq!(
            of(exited(0)),
            Outcome {
                target: "Done",
                reason: FinishReason::Completed,
                verdict: "completed (exit status 0) after 4.0s".into(),
                completed: true
            }
        );
        let failed = of(exited(3));
        assert_eq!(
            (failed.target, failed.verdict.as_str()),
            ("Blocked", "failed with exit status 3 after 4.0s")
        );
        let killed = of(Ending::Exited(std::process::ExitStatus::from_raw(9)));
        assert_eq!(killed.verdict, "was killed by signal 9 after 4.0s");
        let timed_out = of(Ending::TimedOut);
        assert_eq!(
            (
                timed_out.target,
                timed_out.reason,
                timed_out.verdict.as_str()
            ),
            (
                "Blocked",
                FinishReason::Failed,
                "reached its timeout (timeout_secs = 4) and was stopped after 4.0s"
            )
        );
        let interrupted = of(Ending::Interrupted);
        assert_eq!(
            (interrupted.target, interrupted.reason),
            ("Ready for AI", FinishReason::Interrupted)
        );
        let reclaimed = of(Ending::LeaseLost(Lost::Reclaimed));
        assert_eq!(
            (reclaimed.reason, reclaimed.verdict.as_str()),
            (
                FinishReason::Interrupted,
                "was stopped after 4.0s: its slot was reclaimed"
            )
        );
        let unrenewable = of(Ending::LeaseLost(Lost::Unrenewable));
        assert_eq!(
            unrenewable.verdict,
            "was stopped after 4.0s: its lease could not be renewed"
        );
    }
}
