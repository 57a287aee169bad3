//! The inflight runner ("watcher"), as a library so tests can drive it
//! in-process; `main.rs` only parses arguments and wires real dependencies.
//!
//! One runner serves one role, as a controller: it sweeps for orphans at
//! start-up and adopts the keepers of its role that still run on this
//! host, then takes the oldest tasks in its claim state (up to the role's
//! `parallel` at once), admits each in the ledger, marks it running in
//! Plane and hands it to a keeper, a process of its own that runs the
//! backend's executor and records how it ended. The runner reports each
//! recorded outcome to Plane and finishes the slot. A runner's restart
//! never touches the keepers (`on_stop = "handover"`): the next runner
//! adopts them.
//!
//! - `dispatch.rs`: one dispatch, from its admission to its report;
//! - `keeper.rs`: the keeper's own work; `keepers.rs`: starting and
//!   following keepers (processes, or tasks in tests);
//! - this file: the loop, the start-up sweep and adoption, and the board.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(config: runtime::Config) -> Result<(), watcher_bin::WatcherError> {
//! let runner = watcher_bin::Runner::new(config, "goal", false, runtime::LogFormat::Text)?;
//! // Runs until Ctrl-C, then stops claiming and, by default, exits leaving
//! // its keepers running for the next runner to adopt.
//! let summary = runner.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{} dispatches", summary.dispatched);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod board;
pub mod cli;
use board::Refused;
mod dispatch;
mod keeper;
mod keepers;
mod launch;
mod leases;
mod memory;
mod output;
mod pulse;
mod spawn;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch::{Dispatch, WatchEnd, Watched};
use leases::Leases;
use ledger_core::{Clock, EventKind, KEEPER_PROTOCOL, Owner, SlotKey, Store, SystemClock, TaskId};
use plane_client::{PlaneError, WorkItem, same_name};
use reconcile::{ProcessProbe, StartupOptions, StartupOutcome};
use runtime::{
    BackendSettings, Config, ConfigError, HostIdentity, LedgerAdapter, LinuxProcessProbe,
    LogFormat, Notifier, Plane, PlaneLookup, RoleFit, RoleProblem, RoleSettings, SharedBoard,
    Silence, StopMode, StoreStartupLock, check_role, on_store, open_store, requeue_reclaimed,
    role_fit, state_of, this_owner,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
// Tokio's clock, so that every wait of the runner follows a paused clock in
// tests; the ledger's timestamps come from `Dependencies::clock`.
use tokio::time::Instant;

pub use keeper::{KEEPER_ARG, KeeperEnd, KeeperJob, KeeperParts, keep};
pub use keepers::{InProcessKeepers, Keeper, Keepers, ProcessKeepers, run_keeper_if_asked};
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
    /// Runs handed to keepers.
    pub dispatched: u32,
    /// Runs reported as exited 0 (this runner's or adopted).
    pub completed: u32,
    /// Slots reclaimed by the start-up sweep.
    pub reclaimed_at_startup: u32,
    /// Running keepers adopted at start-up.
    pub adopted: u32,
}

/// What a runner works with. [`Runner::new`] wires the real ones (the
/// configured store, Plane's HTTP client, `/proc`, forked processes, the
/// wall clock); tests hand it others.
#[allow(missing_debug_implementations)]
pub struct Dependencies {
    /// The ledger.
    pub store: Arc<dyn Store>,
    /// The Plane project.
    pub plane: Arc<dyn Plane>,
    /// Whether a slot's owner is alive, for the start-up sweep.
    pub probe: Arc<dyn ProcessProbe>,
    /// Starts keepers, which start executors, and follows them.
    pub keepers: Arc<dyn Keepers>,
    /// The ledger's timestamps (admissions, leases, finishes).
    pub clock: Arc<dyn Clock>,
}

/// A runner for one role.
pub struct Runner {
    config: Config,
    role: RoleSettings,
    backend: BackendSettings,
    ledger: Arc<dyn Store>,
    plane: Arc<dyn Plane>,
    probe: Arc<dyn ProcessProbe>,
    keepers: Arc<dyn Keepers>,
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
    /// With webhooks on: whether deliveries still arrive, judged from
    /// the board; while they do not, the runner polls at
    /// `webhook.silent_poll_secs`.
    silence: Mutex<Silence>,
    /// When the last look's listing began: a delivery about an older
    /// change is no news.
    last_listed: Mutex<Option<std::time::SystemTime>>,
    /// What this runner tells Prometheus.
    metrics: Arc<runtime::Metrics>,
    /// What it tells systemd (readiness, liveness), if anything.
    notifier: Arc<Notifier>,
    /// The claim loop's signs of life, for systemd's watchdog.
    pulse: pulse::Pulse,
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
            .field("keepers", &self.keepers)
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

/// Once shutdown has begun, what the runner still tells Plane (the task put
/// back, its comment) gets this long in all, whatever Plane is doing: a
/// deploy's SIGTERM must not wait out a rate-limit window. What does not
/// get through is repaired by the next runner's look at the board.
const SHUTDOWN_PLANE_ALLOWANCE: Duration = Duration::from_millis(1500);

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
        stopped = async { stop.wait_for(|s| *s).await.is_ok() } => {
            if stopped {
                None
            } else {
                // The sender is only dropped after sending `true`.
                std::future::pending().await
            }
        }
    }
}

impl Runner {
    /// A runner for `role` of `config` with the real dependencies: opens
    /// the ledger, builds the Plane client (reading the API key from the
    /// environment) and starts keepers as this binary (see
    /// [`ProcessKeepers`]; its `main` must call [`run_keeper_if_asked`]),
    /// logging in `log_format`. Call it inside a tokio runtime, off its
    /// threads (from async code: [`Runner::open`]).
    pub fn new(
        config: Config,
        role: &str,
        once: bool,
        log_format: LogFormat,
    ) -> Result<Self, WatcherError> {
        let host = HostIdentity::current()?;
        // The configuration's errors first (a missing key variable is one):
        // a ledger that cannot be opened must not hide them. A role with a
        // key of its own draws on that key's budget.
        let plane_config = config.plane_config_for(config.role(role)?)?;
        let store = open_store(&config)?;
        let metrics = runtime::Metrics::new();
        let dependencies = Dependencies {
            plane: Arc::new(runtime::plane_client(
                plane_config,
                store.clone(),
                &metrics,
            )?),
            store,
            probe: Arc::new(LinuxProcessProbe::new(host, config.watcher.grace)),
            keepers: Arc::new(ProcessKeepers::new(
                std::env::current_exe()?,
                config.path.clone(),
                log_format,
            )?),
            clock: Arc::new(SystemClock),
        };
        Ok(Self::with_dependencies(config, role, once, dependencies)?
            .with_metrics(metrics)
            .with_notifier(Notifier::from_env()))
    }

    /// Tells `notifier` (systemd) when it is ready, and that it is alive
    /// while its loop is (see the `pulse` module).
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Arc::new(notifier);
        self
    }

    /// [`Runner::new`] on the blocking pool, for async callers: opening a
    /// store blocks (a PostgreSQL store connects and migrates).
    pub async fn open(
        config: Config,
        role: String,
        once: bool,
        log_format: LogFormat,
    ) -> Result<Self, WatcherError> {
        tokio::task::spawn_blocking(move || {
            ledger_core::blocking::may_block(|| Self::new(config, &role, once, log_format))
        })
        .await
        .map_err(|e| std::io::Error::other(format!("opening the runner: {e}")))?
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
            keepers,
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
            silence: Mutex::new(Default::default()),
            last_listed: Mutex::new(None),
            notifier: Arc::new(Notifier::default()),
            pulse: pulse::Pulse::new(),
            metrics,
            leases,
            config,
            role,
            backend,
            ledger: store,
            plane,
            probe,
            keepers,
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
    /// cycle and its run's report).
    ///
    /// With `--once`, a failure to look at the board is an error (exit
    /// status 1) and a role whose names the project lacks is a
    /// configuration error (exit status 2); without it, both are logged and
    /// retried, the first with a backoff, the second at every re-check.
    ///
    /// On shutdown it stops claiming and does what `[watcher] on_stop`
    /// says with the runs its keepers hold (see [`StopMode`]).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Summary, WatcherError> {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let this = Arc::new(self);
        // Leases are kept from the start: a slot is held from its admission
        // until its keeper takes it over.
        let renewing = tokio::spawn(this.leases.clone().keep(stop.clone()));
        if this.config.webhook.is_some() {
            // Hints from before this start are covered by its first look.
            let (_, last) = this.board.hints_after(u64::MAX).await;
            this.last_hint.store(last, Ordering::Relaxed);
        }
        let mut summary = Summary {
            reclaimed_at_startup: this.sweep(&stop, true).await,
            ..Summary::default()
        };
        this.notifier
            .ready(&format!("runner of role {}", this.role.name));
        let pinging = this.notifier.watchdog().map(|interval| {
            let this = this.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval / 2).await;
                    if this.pulse.alive_within(interval) {
                        this.notifier.alive();
                    }
                }
            })
        });
        let mut active = JoinSet::new();
        let claimed = this.claim(&stop, &mut active, &mut summary).await;
        this.notifier.stopping();
        if let Some(pinging) = pinging {
            pinging.abort();
        }
        // A look at the board cut short leaves its listing to the others
        // at once, not when its claim lapses.
        this.board.give_up().await;
        this.wind_down(&mut active, &mut summary, &stop).await;
        renewing.abort();
        tracing::info!(
            dispatched = summary.dispatched,
            completed = summary.completed,
            adopted = summary.adopted,
            "runner stopped"
        );
        claimed.map(|()| summary)
    }

    /// Follows every run a keeper of this role holds on this host: the
    /// keepers a runner before this one started, still running or ended
    /// with their outcome recorded while no runner was up. A keeper of a
    /// protocol this build does not know is left alone.
    ///
    /// `None` when the open slots could not be read in time (another
    /// process holding the ledger's write lock, a store that does not
    /// answer): the runner tries again before it claims anything.
    async fn adopt(
        self: &Arc<Self>,
        active: &mut JoinSet<WatchEnd>,
        stop: &watch::Receiver<bool>,
    ) -> Option<u32> {
        let read = on_store(&self.ledger, |s| s.open_slots());
        let slots = match tokio::time::timeout(self.config.watcher.startup_reconcile, read).await {
            Ok(Ok(slots)) => slots,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read the open slots to adopt their keepers; trying again before claiming");
                return None;
            }
            Err(_) => {
                tracing::warn!(
                    "reading the open slots to adopt their keepers did not finish in time; trying again before claiming"
                );
                return None;
            }
        };
        let project = self.config.project();
        let mut adopted = 0;
        for slot in slots {
            let holder = &slot.owner;
            let Some(version) = holder.keeper else {
                continue;
            };
            if holder.host != self.owner.host
                || holder.boot_id != self.owner.boot_id
                || holder.role.as_deref() != Some(self.role.name.as_str())
                || holder.project.as_ref() != Some(&project)
            {
                continue;
            }
            if version == 0 || version > KEEPER_PROTOCOL {
                tracing::warn!(slot = %slot.key, run = %slot.run_id, keeper_pid = holder.runner.pid, version, known = KEEPER_PROTOCOL, "a keeper of a protocol this runner does not know holds this slot; leaving it alone");
                continue;
            }
            tracing::info!(slot = %slot.key, run = %slot.run_id, keeper_pid = holder.runner.pid, outcome_recorded = holder.outcome.is_some(), "adopting a keeper");
            let watched = Watched {
                keeper: self.keepers.adopt(holder),
                key: slot.key,
                run: slot.run_id,
            };
            active.spawn(self.clone().watch(watched, stop.clone()));
            adopted += 1;
        }
        Some(adopted)
    }

    /// Claims until stopped (or, with `--once`, one claim cycle), holding
    /// up to the role's `parallel` runs at once.
    async fn claim(
        self: &Arc<Self>,
        stop: &watch::Receiver<bool>,
        active: &mut JoinSet<WatchEnd>,
        summary: &mut Summary,
    ) -> Result<(), WatcherError> {
        let parallel = self.role.parallel.max(1) as usize;
        // Said once the role's names resolve: not before a role that
        // claims nothing (or, with --once, exits 2).
        let mut said_claiming = false;
        let mut failures: u32 = 0;
        // When the role's missing names were last said (once per
        // `cache_secs`, not at every poll).
        let mut said_unresolved: Option<Instant> = None;
        let mut adopted = false;
        'cycles: loop {
            if *stop.borrow() {
                break;
            }
            self.pulse.beat();
            // The keepers of the role come first: their runs count against
            // `parallel`, and outcomes recorded while no runner was up are
            // reported before anything new is claimed.
            if !adopted {
                match unless_stopped(stop, self.adopt(active, stop)).await {
                    None => break,
                    Some(Some(count)) => {
                        summary.adopted = count;
                        adopted = true;
                    }
                    Some(None) => {
                        if self.rest(self.poll_interval, stop).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            while let Some(ended) = active.try_join_next() {
                tally(ended, summary);
            }
            if active.len() >= parallel {
                // Every run this runner may hold is running: wait for one
                // to end.
                match self.pause(self.poll_interval, stop, active, summary).await {
                    Pause::Stopped => break,
                    Pause::Elapsed | Pause::RunEnded => continue,
                }
            }
            // Nothing is claimed while the role names a state or a label
            // the project lacks: every claim would fail after its admission.
            // The check reads the cached states and labels, so it costs a
            // request only when they expire, which is also when an
            // unresolved role is checked again.
            let checked = match unless_stopped(stop, check_role(&*self.plane, &self.role)).await {
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
                    if said_unresolved.is_none_or(|at| at.elapsed() >= self.config.plane.cache) {
                        tracing::error!(%error, recheck_secs = self.config.plane.cache.as_secs(), "the role claims nothing until its names resolve");
                        said_unresolved = Some(Instant::now());
                    }
                    // Checked again when the cached names expire, or as
                    // soon as the board shows a label or state they lack
                    // (one just created and put on a task).
                    if self.rest(self.poll_interval, stop).await {
                        break;
                    }
                    if unless_stopped(stop, self.learn_new_names()).await.is_none() {
                        break;
                    }
                    continue;
                }
                Ok(_) => {
                    if !said_claiming {
                        tracing::info!(role = %self.role.name, backend = %self.backend.name, claim_state = %self.role.claim_state, parallel, "claiming");
                        said_claiming = true;
                    }
                    match unless_stopped(stop, self.board()).await {
                        None => break,
                        Some(board) => board,
                    }
                }
                Err(error) => Err(error),
            };
            let board = match board {
                Ok(board) => board,
                Err(error) => {
                    if self.once {
                        return Err(WatcherError::Plane(error));
                    }
                    failures += 1;
                    self.metrics.error("board");
                    let wait = self.backoff(failures);
                    tracing::warn!(%error, wait_secs = wait.as_secs(), "could not list the board; backing off");
                    if self.rest(wait, stop).await {
                        break;
                    }
                    continue;
                }
            };
            failures = 0;
            if unless_stopped(stop, self.repair_stuck(&board.stuck))
                .await
                .is_none()
            {
                break;
            }
            let mut dispatched_this_cycle = false;
            let mut failed_this_cycle = false;
            let hinted = board.hinted;
            for item in board.claimable {
                if *stop.borrow() {
                    break 'cycles;
                }
                if active.len() >= parallel {
                    break;
                }
                match self.dispatch(&item, stop).await {
                    Dispatch::Handed(watched) => {
                        summary.dispatched += 1;
                        dispatched_this_cycle = true;
                        active.spawn(self.clone().watch(watched, stop.clone()));
                        if self.once {
                            break 'cycles;
                        }
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
                        self.metrics.error("dispatch");
                        failed_this_cycle = true;
                        break;
                    }
                    Dispatch::Interrupted => break 'cycles,
                }
            }
            if !failed_this_cycle {
                self.metrics.progressed(std::time::SystemTime::now());
            }
            if self.once {
                break;
            }
            // After a dispatch the board has changed: look again at once
            // (the shared snapshot leaves out what was taken since).
            // Idle or capped: wait, rather than spend Plane's budget, until
            // the poll interval, a webhook's hint, or the end of a run.
            if !dispatched_this_cycle && self.wait_for_work(stop, active, summary).await {
                break;
            }
        }
        Ok(())
    }

    /// After claiming: `--once` waits for its run's report; a stop does
    /// what `on_stop` says. Whatever is still followed at the end is left
    /// to its keeper, for the next runner to adopt.
    async fn wind_down(
        &self,
        active: &mut JoinSet<WatchEnd>,
        summary: &mut Summary,
        stop: &watch::Receiver<bool>,
    ) {
        if self.once {
            let mut stopped = stop.clone();
            loop {
                tokio::select! {
                    ended = active.join_next() => match ended {
                        Some(ended) => tally(ended, summary),
                        None => return,
                    },
                    _ = stopped.wait_for(|s| *s) => break,
                }
            }
        }
        let mode = self.config.watcher.on_stop;
        // Handing over, the runs stop being followed at once, bar a report
        // under way; draining, they are followed up to `drain_secs`;
        // interrupting, each keeper gets its grace period to stop its
        // executor, and the report its allowance.
        let limit = match mode {
            StopMode::Handover => HANDOVER_ALLOWANCE,
            StopMode::Drain => self.config.watcher.drain,
            StopMode::Interrupt => {
                self.config.watcher.grace + SHUTDOWN_PLANE_ALLOWANCE * 2 + Duration::from_secs(2)
            }
        };
        if !active.is_empty() {
            tracing::info!(runs = active.len(), on_stop = mode.as_str(), "stopping");
        }
        let _ = tokio::time::timeout(limit, async {
            while let Some(ended) = active.join_next().await {
                tally(ended, summary);
            }
        })
        .await;
        if !active.is_empty() {
            tracing::info!(
                runs = active.len(),
                "handing over the runs still under way: their keepers go on, and the next runner of the role on this host adopts them"
            );
            active.abort_all();
        }
    }

    /// Waits for `wait`, shutdown or the end of a followed run, whichever
    /// comes first.
    async fn pause(
        &self,
        wait: Duration,
        stop: &watch::Receiver<bool>,
        active: &mut JoinSet<WatchEnd>,
        summary: &mut Summary,
    ) -> Pause {
        tokio::select! {
            stopped = self.rest(wait, stop) => {
                if stopped { Pause::Stopped } else { Pause::Elapsed }
            }
            Some(ended) = active.join_next(), if !active.is_empty() => {
                tally(ended, summary);
                Pause::RunEnded
            }
        }
    }

    /// Waits `wait`, or until stopped (true then): a healthy wait, which
    /// keeps the runner alive to systemd's watchdog meanwhile (see the
    /// `pulse` module). Every wait of the claim loop goes through here.
    async fn rest(&self, wait: Duration, stop: &watch::Receiver<bool>) -> bool {
        self.pulse.idle(wait_or_stop(wait, stop.clone())).await
    }

    fn backoff(&self, failures: u32) -> Duration {
        (Duration::from_secs(1) * 2u32.saturating_pow(failures.min(16)))
            .min(self.poll_interval.max(Duration::from_secs(1)) * 4)
    }

    /// A sweep of the orphan rules: at start-up, and when a keeper this
    /// runner follows died without recording an outcome. Bounded in time,
    /// cancelled by shutdown and never fatal; reclaimed tasks still marked
    /// running in Plane go back on the board.
    pub(crate) async fn sweep(&self, stop: &watch::Receiver<bool>, at_startup: bool) -> u32 {
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
            ledger_core::blocking::may_block(|| {
                runtime.block_on(reconcile::reconcile_on_startup(
                    &lock, &ledger, &lookup, &*probe, &options, now,
                ))
            })
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
        if reclaimed > 0 && at_startup {
            tracing::info!(
                reclaimed,
                restart_to_reclaim_ms = self.created.elapsed().as_millis() as u64,
                "reclaimed slots at start-up"
            );
        } else if reclaimed > 0 {
            tracing::info!(reclaimed, "reclaimed slots");
        }
        if reclaimed > 0 {
            let requeue =
                requeue_reclaimed(&*self.plane, &self.ledger, &self.config, &scan.actions);
            // Cut short by shutdown, a reclaimed task left in its running
            // state is repaired by the next look at the board.
            let requeued = unless_stopped(stop, requeue).await;
            tracing::debug!(?requeued, "reclaimed tasks on the board");
        }
        reclaimed
    }
}

/// Sleeps for `wait` unless stopped first; true when stopped.
async fn wait_or_stop(wait: Duration, stop: watch::Receiver<bool>) -> bool {
    unless_stopped(&stop, tokio::time::sleep(wait))
        .await
        .is_none()
}

/// Why a pause ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    Stopped,
    Elapsed,
    RunEnded,
}

/// Once handing over has begun, a report under way (a finish, a move, a
/// comment) gets this long to end before the runner exits.
const HANDOVER_ALLOWANCE: Duration = Duration::from_millis(700);

/// Counts a followed run's end.
fn tally(ended: Result<WatchEnd, tokio::task::JoinError>, summary: &mut Summary) {
    match ended {
        Ok(WatchEnd::Reported { completed }) => summary.completed += u32::from(completed),
        Ok(WatchEnd::Left) => {}
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!(error = %e, "following a run failed"),
    }
}
