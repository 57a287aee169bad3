//! The keeper: one process per dispatch that holds its slot and supervises
//! its executor, so that the executor outlives the runner that claimed it.
//!
//! A runner admits a task, marks it running and starts a keeper (this
//! binary again, with [`KEEPER_ARG`]); from then on the two speak only
//! through the ledger. The keeper:
//!
//! 1. takes the slot over ([`LedgerStore::set_holder`]): the holder the
//!    ledger records is now the keeper (host, boot, pid, start time, with
//!    [`KEEPER_PROTOCOL`]). Until that commit it dies with its runner
//!    (`PR_SET_PDEATHSIG`), so a slot a sweep found held by a dead runner
//!    cannot be taken over behind the sweep's back; afterwards it detaches,
//!    and a runner's restart no longer touches it;
//! 2. starts the executor behind its start gate, in its own process group,
//!    set to die with the keeper, records it in the slot and lets it start;
//! 3. renews the slot's lease while the executor runs (stopping it before
//!    the lease can run out if the store stops answering: the self-fencing
//!    that keeps a task from running on two hosts), enforces the backend's
//!    `timeout_secs`, and on SIGTERM stops it (SIGTERM to the group, the
//!    grace period, SIGKILL): an operator's `watchdog interrupt`;
//! 4. records how it ended ([`RunOutcome`]: exit status or signal,
//!    duration, the end of its output) in the slot, and exits.
//!
//! The runner that started it, or any later runner of its role on this
//! host, reports the outcome to Plane and finishes the slot. A keeper that
//! dies without recording an outcome is a dead owner (`DEAD_OWNER_CLEAR`).

use std::sync::Arc;
use std::time::Duration;

use ledger_core::{
    Clock, ExecutorIdentity, KEEPER_PROTOCOL, LedgerStore, Owner, RunEnding, RunId, RunOutcome,
    SlotKey, UpdateOutcome,
};
use runtime::{BackendSettings, Config, on_store};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::leases::{Leases, Lost};
use crate::{Executor, Launch, Launcher};

/// The argument that makes the watcher binary a keeper. Not for people:
/// `--help` does not list it.
pub const KEEPER_ARG: &str = "--inflight-keeper";

/// One dispatch handed to a keeper: what it needs beyond the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperJob {
    /// The role that claimed the task.
    pub role: String,
    /// The slot.
    pub key: SlotKey,
    /// The run.
    pub run: RunId,
    /// The work item's title, for `INFLIGHT_TASK_NAME`.
    pub task_name: String,
}

impl KeeperJob {
    /// The job as a keeper process's arguments (after [`KEEPER_ARG`]).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--role".into(),
            self.role.clone(),
            "--backend".into(),
            self.key.backend.as_str().into(),
            "--task".into(),
            self.key.task_id.as_str().into(),
            "--run".into(),
            self.run.as_str().into(),
            "--task-name".into(),
            self.task_name.clone(),
        ]
    }
}

/// What a keeper works with: the real ones in a keeper process, in-process
/// fakes in tests.
#[allow(missing_debug_implementations)]
pub struct KeeperParts {
    /// The configuration (the backend's command and timeout, the grace
    /// period, the lease).
    pub config: Config,
    /// The ledger.
    pub store: Arc<dyn LedgerStore>,
    /// Starts the executor.
    pub launcher: Arc<dyn Launcher>,
    /// The ledger's timestamps.
    pub clock: Arc<dyn Clock>,
    /// This keeper as a slot's holder (its host, boot, process, role and
    /// project; `keeper` is set here).
    pub holder: Owner,
    /// Counts lease renewals.
    pub metrics: Arc<runtime::Metrics>,
}

/// How a keeper's work ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperEnd {
    /// The executor ran (or could not start) and its outcome is recorded in
    /// the slot.
    Recorded(RunOutcome),
    /// The slot is not, or no longer, this run's: nothing was started, or
    /// the executor was stopped.
    NotHeld(String),
    /// The store failed; the slot's holder is a dead owner once the keeper
    /// exits.
    Failed(String),
}

/// Keeps `job`: takes its slot over, runs its executor to its end and
/// records the outcome (see the module's documentation). `detach` is called
/// once the slot is this keeper's (a keeper process stops dying with its
/// runner there), `started` once its executor runs (a keeper process lets
/// go of its start-up's pages there); `stop` interrupts the executor.
pub async fn keep(
    parts: KeeperParts,
    job: KeeperJob,
    detach: impl FnOnce(),
    started: impl FnOnce(),
    stop: watch::Receiver<bool>,
) -> KeeperEnd {
    let KeeperParts {
        config,
        store,
        launcher,
        clock,
        mut holder,
        metrics,
    } = parts;
    let Some(backend) = config.backends.get(job.key.backend.as_str()).cloned() else {
        return KeeperEnd::Failed(format!(
            "backend {} is not in the configuration",
            job.key.backend
        ));
    };
    holder.keeper = Some(KEEPER_PROTOCOL);
    holder.title = Some(job.task_name.clone());
    holder.executor = None;
    holder.outcome = None;
    match set_holder(&store, &job, &holder).await {
        Ok(UpdateOutcome::Updated) => {}
        Ok(_) => return KeeperEnd::NotHeld("the slot is no longer this run's".into()),
        Err(e) => return KeeperEnd::Failed(format!("could not take the slot over: {e}")),
    }
    detach();
    tracing::info!(task = %job.key.task_id, run = %job.run, "keeping the run");

    let leases = Arc::new(Leases::new(
        store.clone(),
        clock.clone(),
        holder.clone(),
        config.lease(),
        config.renew_interval(),
        config.watcher.grace,
        metrics,
    ));
    let held = leases.hold(&job.key, &job.run);
    leases.admitted(&job.key);
    let (renewals_stop, renewals_stopped) = watch::channel(false);
    let renewing = tokio::spawn(leases.clone().keep(renewals_stopped));
    let run = Supervised {
        config: &config,
        backend: &backend,
        store: &store,
        job: &job,
    };
    let at = Instant::now();
    let ran = run.run(&*launcher, held, stop, started).await;
    let _ = renewals_stop.send(true);
    let _ = renewing.await;
    let (ending, executor, tail) = match ran {
        Ran::Ended {
            ending,
            executor,
            tail,
        } => (ending, executor, tail),
        // Stopped in time; the slot is still this keeper's until its lease
        // runs out: record why, for the task to go back.
        Ran::Lost(LostRun::Unrenewable { executor, tail }) => (RunEnding::Fenced, executor, tail),
        Ran::Lost(LostRun::Reclaimed) => {
            return KeeperEnd::NotHeld("the slot was reclaimed while the executor ran".into());
        }
        Ran::Failed(why) => return KeeperEnd::Failed(why),
    };
    let outcome = RunOutcome {
        took_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
        output_tail: if matches!(ending, RunEnding::Exited { code: 0 }) {
            None
        } else {
            tail
        },
        ending,
        ended_at: clock.now(),
    };
    holder.executor = executor;
    holder.outcome = Some(outcome.clone());
    // The outcome must reach the ledger, or the run counts as lost: try
    // again while the store does not answer, for a while past the lease
    // (by then another host may have reclaimed the slot, which the next
    // attempt learns).
    let give_up = Instant::now() + config.lease() * 2 + Duration::from_secs(60);
    let mut wait = Duration::from_millis(250);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match set_holder(&store, &job, &holder).await {
            Ok(UpdateOutcome::Updated) => {
                tracing::info!(task = %job.key.task_id, run = %job.run, ending = ?outcome.ending, took_ms = outcome.took_ms, "recorded the run's outcome");
                return KeeperEnd::Recorded(outcome);
            }
            Ok(_) => {
                return KeeperEnd::NotHeld(
                    "the slot was released before the outcome was recorded".into(),
                );
            }
            Err(e) if Instant::now() < give_up => {
                tracing::warn!(attempt, error = %e, "could not record the run's outcome; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return KeeperEnd::Failed(format!("could not record the run's outcome: {e}"));
            }
        }
    }
}

async fn set_holder(
    store: &Arc<dyn LedgerStore>,
    job: &KeeperJob,
    holder: &Owner,
) -> ledger_core::Result<UpdateOutcome> {
    let (key, run, holder) = (job.key.clone(), job.run.clone(), holder.clone());
    on_store(store, move |s| s.set_holder(&key, &run, &holder)).await
}

/// How the executor's run ended, from the keeper's side.
enum Ran {
    /// It ended this way (or never started); its identity once recorded,
    /// and the end of its output.
    Ended {
        ending: RunEnding,
        executor: Option<ExecutorIdentity>,
        tail: Option<String>,
    },
    /// The slot stopped being this keeper's, or its lease could not be
    /// renewed; the executor was stopped.
    Lost(LostRun),
    /// The executor could not be recorded, so it never started.
    Failed(String),
}

/// A run stopped because its slot was lost: reclaimed (nothing to record),
/// or its lease unrenewable (the executor and the end of its output, for
/// the record).
enum LostRun {
    Reclaimed,
    Unrenewable {
        executor: Option<ExecutorIdentity>,
        tail: Option<String>,
    },
}

/// One run's executor under supervision.
struct Supervised<'a> {
    config: &'a Config,
    backend: &'a BackendSettings,
    store: &'a Arc<dyn LedgerStore>,
    job: &'a KeeperJob,
}

impl Supervised<'_> {
    async fn run(
        &self,
        launcher: &dyn Launcher,
        held: watch::Receiver<Option<Lost>>,
        stop: watch::Receiver<bool>,
        started: impl FnOnce(),
    ) -> Ran {
        let (task, run) = (&self.job.key.task_id, &self.job.run);
        // Interrupted before anything ran (its runner gave up waiting for
        // it, or an operator was quick): start nothing.
        if *stop.borrow() {
            return Ran::Ended {
                ending: RunEnding::Interrupted,
                executor: None,
                tail: None,
            };
        }
        let launch = self.launch();
        let mut executor = match launcher.launch(&launch).await {
            Ok(executor) => executor,
            Err(e) => {
                let why = format!(
                    "could not start the executor {:?}: {e}",
                    self.backend.program
                );
                tracing::error!(task = %task, run = %run, "{why}");
                return Ran::Ended {
                    ending: RunEnding::NotLaunched { why },
                    executor: None,
                    tail: None,
                };
            }
        };
        // Recorded before the executor may start (it waits at its gate), so
        // a reclaim after this keeper's death always finds its group. No
        // record, no start.
        let identity = match executor.identity() {
            Ok(identity) => self.record(identity).await,
            Err(why) => Err(why),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(why) => {
                executor.abandon();
                let _ = tokio::time::timeout(self.config.watcher.grace, executor.wait()).await;
                tracing::error!(task = %task, run = %run, "the executor was not started: {why}");
                return Ran::Failed(why);
            }
        };
        if let Err(e) = executor.start() {
            // The gate is gone, so the executor is too; its exit is recorded
            // like any other.
            tracing::warn!(task = %task, run = %run, error = %e, "could not open the executor's start gate");
        }
        tracing::info!(task = %task, run = %run, pid = identity.process.pid, name = %self.job.task_name, "executor started");
        started();
        let output = executor.output();
        let ending = self.supervise(&mut *executor, held, stop).await;
        // Whatever the executor left behind in its group goes with it.
        executor
            .clean_up(&identity, self.config.watcher.grace)
            .await;
        match ending {
            Ok(ending) => Ran::Ended {
                ending,
                executor: Some(identity),
                tail: output.render(),
            },
            Err(Lost::Reclaimed) => Ran::Lost(LostRun::Reclaimed),
            Err(Lost::Unrenewable) => Ran::Lost(LostRun::Unrenewable {
                executor: Some(identity),
                tail: output.render(),
            }),
        }
    }

    /// What to run: the backend's command, with the dispatch's variables in
    /// its environment and without any secret the configuration names.
    fn launch(&self) -> Launch {
        let job = self.job;
        Launch {
            program: self.config.program_of(self.backend),
            args: self.backend.args.clone(),
            dir: self.config.dir.clone(),
            env: vec![
                ("INFLIGHT_TASK_ID", job.key.task_id.as_str().to_owned()),
                ("INFLIGHT_RUN_ID", job.run.as_str().to_owned()),
                ("INFLIGHT_BACKEND", job.key.backend.as_str().to_owned()),
                ("INFLIGHT_ROLE", job.role.clone()),
                ("INFLIGHT_TASK_NAME", job.task_name.clone()),
            ],
            // The executor has no business with Plane's keys, the
            // database's password or the webhook's secret, nor with
            // systemd's notify socket (it would speak for the runner).
            env_remove: self
                .config
                .secret_envs()
                .into_iter()
                .chain(runtime::NOTIFY_VARIABLES.map(String::from))
                .collect(),
            task: job.key.task_id.as_str().to_owned(),
        }
    }

    /// Records a spawned (gated) executor in its slot.
    async fn record(&self, identity: ExecutorIdentity) -> Result<ExecutorIdentity, String> {
        let pid = identity.process.pid;
        let (key, run, record) = (self.job.key.clone(), self.job.run.clone(), identity.clone());
        match on_store(self.store, move |s| s.set_executor(&key, &run, record)).await {
            Ok(UpdateOutcome::Updated) => Ok(identity),
            Ok(_) => Err(format!(
                "its slot is no longer open (released or reclaimed): the executor (pid {pid}) could not be recorded"
            )),
            Err(e) => Err(format!("could not record the executor (pid {pid}): {e}")),
        }
    }

    /// Waits for the executor, enforcing the timeout, answering an
    /// interruption, and stopping it at once if its slot is lost.
    async fn supervise(
        &self,
        executor: &mut dyn Executor,
        mut held: watch::Receiver<Option<Lost>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunEnding, Lost> {
        let deadline = Instant::now() + self.backend.timeout;
        let mut interrupted = *stop.borrow();
        if interrupted {
            tracing::info!("interrupted before the executor started: stopping it");
            self.stop_executor(executor).await;
            return Ok(RunEnding::Interrupted);
        }
        loop {
            let lost = held.borrow_and_update().clone();
            if let Some(lost) = lost {
                tracing::warn!(
                    ?lost,
                    "stopping the executor: its slot is no longer this keeper's"
                );
                self.stop_executor(executor).await;
                return Err(lost);
            }
            tokio::select! {
                status = executor.wait() => {
                    return Ok(match status {
                        Ok(status) => ending_of(&status),
                        Err(e) => {
                            tracing::error!(error = %e, "lost track of the executor");
                            RunEnding::Exited { code: 1 }
                        }
                    });
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(timeout_secs = self.backend.timeout.as_secs(), "executor timed out");
                    self.stop_executor(executor).await;
                    return Ok(RunEnding::TimedOut { limit_secs: self.backend.timeout.as_secs() });
                }
                _ = held.changed() => {}
                changed = stop.changed(), if !interrupted => {
                    if changed.is_err() {
                        // Nobody can interrupt any more: wait for the end.
                        interrupted = true;
                    } else if *stop.borrow() {
                        tracing::info!("interrupted: stopping the executor");
                        self.stop_executor(executor).await;
                        return Ok(RunEnding::Interrupted);
                    }
                }
            }
        }
    }

    /// SIGTERM to the executor's group, the grace period, then SIGKILL.
    async fn stop_executor(&self, executor: &mut dyn Executor) {
        fn signal(executor: &mut dyn Executor, signal: i32) {
            if let Err(e) = executor.signal(signal) {
                tracing::warn!(signal, error = %e, "could not signal the executor's group");
            }
        }
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
}

/// An exit status as the ledger records it.
pub(crate) fn ending_of(status: &std::process::ExitStatus) -> RunEnding {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => RunEnding::Exited { code },
        (None, Some(signal)) => RunEnding::Killed { signal },
        _ => RunEnding::Exited { code: 1 },
    }
}
