//! One dispatch, from its admission to its report: admitted against the
//! caps, re-read and marked running in Plane, handed to a keeper, followed
//! until the keeper has recorded how its executor ended, reported to Plane
//! and finished. The runner holds the slot itself only until its keeper
//! takes it over; from then on the run survives the runner, and whichever
//! runner of the role follows it (this one, or the next one after a
//! restart, which adopts it) reports it, exactly once: the conditional
//! finish by run id decides who.

use std::sync::Arc;
use std::time::Duration;

use ledger_core::{
    AdmitOutcome, AdmitRequest, Denial, DenyReason, FinishOutcome, FinishReason, Owner, RunEnding,
    RunId, RunOutcome, Slot, SlotGuard, SlotKey, TaskId,
};
use plane_client::{PlaneError, WorkItem, same_name};
use runtime::{RoleSettings, StopMode, html_escape, on_store, state_of};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::keeper::KeeperJob;
use crate::keepers::Keeper;
use crate::{Runner, SHUTDOWN_PLANE_ALLOWANCE, unless_stopped};

/// How one dispatch attempt ended.
pub(crate) enum Dispatch {
    /// A keeper holds the run now: follow it.
    Handed(Watched),
    /// This task is not for us after all (held by another run, moved on).
    Skipped,
    /// A cap refused it: wait for the poll interval.
    Capped(Denial),
    /// Plane, the ledger or the keeper failed: back off.
    Failed(String),
    /// Shutdown arrived before a keeper took the run.
    Interrupted,
}

/// The dispatch under way: its task, slot and run.
pub(crate) struct Run {
    pub(crate) task: TaskId,
    pub(crate) key: SlotKey,
    pub(crate) id: RunId,
    /// The work item's title, recorded in the slot for operators.
    pub(crate) title: String,
}

/// A run that a keeper holds, as a runner follows it.
#[derive(Debug)]
pub(crate) struct Watched {
    pub(crate) key: SlotKey,
    pub(crate) run: RunId,
    pub(crate) keeper: Box<dyn Keeper>,
}

/// How following a run ended for this runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchEnd {
    /// This runner reported its outcome and finished its slot.
    Reported {
        /// The executor exited 0.
        completed: bool,
    },
    /// Left to others: handed over at shutdown, reported by another
    /// runner, reclaimed.
    Left,
}

/// A dispatch that ends before its keeper takes it: why, and what the run
/// loop makes of it.
struct Released {
    why: String,
    outcome: fn(String) -> Dispatch,
}

impl Released {
    fn shutting_down() -> Self {
        Self {
            why: "shutting down".into(),
            outcome: |_| Dispatch::Interrupted,
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

/// How often a runner looks whether its keeper has taken the slot over,
/// when the keeper's word does not come (the keeper tells its runner as
/// it takes the slot; the ledger decides).
const HAND_OVER_POLL: Duration = Duration::from_secs(1);
/// How long a keeper may take to take its slot over (start, load the
/// configuration, open the store, one write).
const HAND_OVER_LIMIT: Duration = Duration::from_secs(30);

impl Runner {
    /// One task, from its admission until a keeper holds it. Every path
    /// that ends before the keeper took it finishes the slot.
    pub(crate) async fn dispatch(&self, item: &WorkItem, stop: &watch::Receiver<bool>) -> Dispatch {
        let Ok(task) = TaskId::new(item.id.clone()) else {
            return Dispatch::Skipped;
        };
        let run = Run {
            key: SlotKey::new(self.backend.name.clone(), task.clone()),
            id: RunId::generate(self.clock.now()),
            task,
            title: item.name.clone(),
        };
        // Held from before the admission: a renewal that finds the slot
        // open knows it for this runner's even if the admission's answer
        // is lost (see `Leases::renew`).
        let _held = self.leases.hold(&run.key, &run.id);
        let slot = match self.admit(&run).await {
            Ok(slot) => slot,
            Err(not_admitted) => {
                self.leases.release(&run.key);
                return not_admitted;
            }
        };
        self.leases.admitted(&run.key);
        // Until its keeper takes it, every path finishes the slot; the
        // guard covers panics.
        let guard = SlotGuard::new(self.ledger.clone(), &slot, self.clock.clone());
        let handed = match self.mark_running(&run, stop).await {
            Ok(()) => self.hand_to_keeper(item, &run, stop).await,
            Err(released) => Err(released),
        };
        match handed {
            Ok(keeper) => {
                guard.hand_over();
                self.leases.release(&run.key);
                tracing::info!(task = %run.task, run = %run.id, name = %item.name, "handed to its keeper");
                Dispatch::Handed(Watched {
                    key: run.key,
                    run: run.id,
                    keeper,
                })
            }
            Err(Released { why, outcome }) => {
                tracing::info!(task = %run.task, run = %run.id, why, "released before its keeper took it");
                self.finish(guard, FinishReason::NotStarted).await;
                outcome(why)
            }
        }
    }

    /// Starts a keeper for the run and waits until it has taken the slot
    /// over. A keeper that cannot be started or exits first, or takes too
    /// long, leaves the run to be released (the task goes back).
    async fn hand_to_keeper(
        &self,
        item: &WorkItem,
        run: &Run,
        stop: &watch::Receiver<bool>,
    ) -> Result<Box<dyn Keeper>, Released> {
        let job = KeeperJob {
            role: self.role.name.clone(),
            key: run.key.clone(),
            run: run.id.clone(),
            task_name: item.name.clone(),
        };
        let mut keeper = match self.keepers.start(&job).await {
            Ok(keeper) => keeper,
            Err(e) => {
                let why = format!("could not start a keeper: {e}");
                tracing::error!(task = %run.task, run = %run.id, "{why}");
                self.put_back(&run.task, stop).await;
                return Err(Released::failed(why));
            }
        };
        let limit = Instant::now() + HAND_OVER_LIMIT;
        let mut exited = false;
        let mut stopping = stop.clone();
        let mut word = keeper.word();
        loop {
            // The keeper's word, its exit, a stop, or a look at the slot
            // now and then: its word costs the ledger nothing.
            tokio::select! {
                said = &mut word => {
                    if said {
                        return Ok(keeper);
                    }
                    word = Box::pin(std::future::pending());
                }
                _ = keeper.wait(), if !exited => exited = true,
                _ = tokio::time::sleep(HAND_OVER_POLL) => {}
                // A stop does not wait for a keeper still starting: the run
                // is left to it. If it takes the slot, the next runner
                // adopts it; if it dies first (it dies with this runner
                // until it has taken the slot), the slot's holder is this
                // runner, gone, and the next sweep puts the task back.
                _ = stopping.wait_for(|s| *s) => {
                    tracing::info!(task = %run.task, run = %run.id, "shutting down while a keeper takes its slot: the run is left to it");
                    return Ok(keeper);
                }
            }
            let (key, wanted) = (run.key.clone(), run.id.clone());
            match on_store(&self.ledger, move |s| s.slot(&key)).await {
                Ok(Some(slot)) if slot.run_id == wanted && slot.owner.keeper.is_some() => {
                    return Ok(keeper);
                }
                Ok(Some(slot)) if slot.run_id == wanted => {}
                // Released or reclaimed meanwhile: the keeper finds it gone
                // and starts nothing.
                Ok(_) => {
                    self.put_back(&run.task, stop).await;
                    return Err(Released::skipped(
                        "the slot was released before its keeper took it".into(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the slot while its keeper takes it")
                }
            }
            if exited || Instant::now() >= limit {
                let why = if exited {
                    "its keeper exited before taking the slot (see the keeper's log)"
                } else {
                    "its keeper did not take the slot in time"
                };
                tracing::error!(task = %run.task, run = %run.id, "{why}");
                // A keeper still starting would find the slot finished.
                let _ = keeper.interrupt();
                self.put_back(&run.task, stop).await;
                return Err(Released::failed(why.into()));
            }
        }
    }

    /// Follows a run its keeper holds until the keeper exits, then reports
    /// what it recorded. On shutdown, what `on_stop` says: hand over (stop
    /// following at once), drain (keep following; the run loop bounds
    /// it), or interrupt (ask the keeper to stop the executor, then report
    /// the interrupted run).
    pub(crate) async fn watch(
        self: Arc<Self>,
        mut watched: Watched,
        mut stop: watch::Receiver<bool>,
    ) -> WatchEnd {
        let mut stop_seen = false;
        loop {
            tokio::select! {
                _ = watched.keeper.wait() => break,
                stopped = stop.wait_for(|s| *s), if !stop_seen => {
                    stop_seen = true;
                    if stopped.is_err() {
                        continue;
                    }
                    drop(stopped);
                    match self.config.watcher.on_stop {
                        StopMode::Handover => return WatchEnd::Left,
                        StopMode::Drain => {}
                        StopMode::Interrupt => {
                            if let Err(e) = watched.keeper.interrupt() {
                                tracing::warn!(slot = %watched.key, error = %e, "could not interrupt the keeper");
                            }
                        }
                    }
                }
            }
        }
        self.conclude(&watched.key, &watched.run, &stop).await
    }

    /// After a keeper exited: reports the outcome it recorded, or, when it
    /// recorded none (it was killed), has its slot reclaimed at once as a
    /// dead owner's.
    async fn conclude(&self, key: &SlotKey, run: &RunId, stop: &watch::Receiver<bool>) -> WatchEnd {
        let mut wait = Duration::from_millis(200);
        let slot = loop {
            let k = key.clone();
            match on_store(&self.ledger, move |s| s.slot(&k)).await {
                Ok(slot) => break slot,
                Err(e) if wait < Duration::from_secs(5) => {
                    tracing::warn!(slot = %key, error = %e, "could not read a slot whose keeper ended; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    tracing::error!(slot = %key, error = %e, "could not read a slot whose keeper ended; the next runner reports it");
                    return WatchEnd::Left;
                }
            }
        };
        let Some(slot) = slot.filter(|s| s.run_id == *run) else {
            return WatchEnd::Left;
        };
        match slot.owner.outcome.clone() {
            Some(outcome) => self.report_outcome(&slot, &outcome, stop).await,
            None => {
                tracing::warn!(slot = %key, run = %run, "the keeper ended without recording an outcome; reclaiming its slot");
                // Its executor dies with it; until it has, the slot's
                // owner still counts as alive, so look again for a while.
                let until = Instant::now() + self.config.watcher.grace + Duration::from_secs(5);
                loop {
                    self.sweep(stop, false).await;
                    let k = key.clone();
                    let open = on_store(&self.ledger, move |s| s.slot(&k)).await;
                    let still = matches!(&open, Ok(Some(s)) if s.run_id == *run);
                    if !still || Instant::now() >= until || *stop.borrow() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                WatchEnd::Left
            }
        }
    }

    /// Reports a recorded outcome: finishes the slot first (conditional on
    /// its run, so of two runners following the run only one goes on),
    /// then moves the task and comments. A report cut short after the
    /// finish is repaired from the ledger at a later look at the board.
    pub(crate) async fn report_outcome(
        &self,
        slot: &Slot,
        outcome: &RunOutcome,
        stop: &watch::Receiver<bool>,
    ) -> WatchEnd {
        let reason = finish_reason(&outcome.ending);
        let (key, run, why, now) = (
            slot.key.clone(),
            slot.run_id.clone(),
            reason.clone(),
            self.clock.now(),
        );
        match on_store(&self.ledger, move |s| s.finish(&key, Some(&run), why, now)).await {
            Ok(FinishOutcome::Finished(finished)) => {
                let held = self.clock.now().duration_since(finished.started_at);
                self.metrics
                    .finished(finished.key.backend.as_str(), reason.clone(), held);
            }
            Ok(_) => return WatchEnd::Left,
            Err(e) => {
                tracing::error!(slot = %slot.key, error = %e, "could not finish a reported run's slot; trying again at the next renewal");
                self.leases
                    .finish_later(slot.key.clone(), slot.run_id.clone(), reason);
                return WatchEnd::Left;
            }
        }
        let task = &slot.key.task_id;
        let lost = if matches!(reason, FinishReason::Completed | FinishReason::Failed) {
            0
        } else {
            let counted = task.clone();
            on_store(&self.ledger, move |s| s.attempts(&counted))
                .await
                .map(|a| a.lost())
                .unwrap_or(0)
        };
        let took = outcome.took_ms as f64 / 1000.0;
        let Outcome {
            target,
            verdict,
            completed,
            ..
        } = outcome_of(&outcome.ending, took, &self.role, lost);
        tracing::info!(task = %task, run = %slot.run_id, took_ms = outcome.took_ms, %verdict, "executor ended");
        let comment = format!(
            "inflight: run {} on backend {} {verdict}.",
            slot.run_id, slot.key.backend
        );
        let tail = if completed {
            None
        } else {
            outcome.output_tail.as_deref()
        };
        self.report(task, target, &comment, tail, !completed, stop)
            .await;
        WatchEnd::Reported { completed }
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
            owner: Owner {
                title: Some(run.title.clone()),
                ..self.owner.clone()
            },
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
        // Stopped before the PATCH goes out: the task is untouched.
        if *stop.borrow() {
            return Err(Released::shutting_down());
        }
        // Shutdown while the PATCH waits or flies: its answer is awaited a
        // little (it says whether the task moved); a task that moved is put
        // back, one that did not is left alone.
        let marked = self
            .plane
            .set_state(task.as_str(), &self.role.running_state);
        match self.bounded_at_shutdown(stop, marked).await {
            Some(Ok(())) if !*stop.borrow() => Ok(()),
            Some(Err(e)) => Err(Released::failed(format!(
                "could not mark the task running: {e}"
            ))),
            Some(Ok(())) => {
                self.put_back(task, stop).await;
                Err(Released::shutting_down())
            }
            None => {
                tracing::warn!(task = %task, "shutting down before Plane answered the move to the running state; if it went through, the next look at the board puts the task back");
                Err(Released::shutting_down())
            }
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
                    // The repair at a later look at the board tries again;
                    // this comment was its first word on the refusal.
                    self.refused_move(task, 1);
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
    pub(crate) async fn comment(&self, task: &TaskId, text: &str, output: Option<&str>) {
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
        let finished = tokio::task::spawn_blocking(move || {
            ledger_core::blocking::may_block(|| guard.finish(why))
        })
        .await;
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

/// The ledger's finish reason for a run that ended this way.
fn finish_reason(ending: &RunEnding) -> FinishReason {
    match ending {
        RunEnding::Exited { code: 0 } => FinishReason::Completed,
        RunEnding::Interrupted | RunEnding::Fenced => FinishReason::Interrupted,
        _ => FinishReason::Failed,
    }
}

/// Where a run's task goes, how its slot is finished, and what its comment
/// says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome<'a> {
    pub(crate) target: &'a str,
    pub(crate) reason: FinishReason,
    pub(crate) verdict: String,
    pub(crate) completed: bool,
}

/// The outcome of a run that ended this way after `took` seconds, its task
/// having lost `lost` attempts: a function over data, so the comment's
/// wording is tested without a run.
pub(crate) fn outcome_of<'a>(
    ending: &RunEnding,
    took: f64,
    role: &'a RoleSettings,
    lost: u64,
) -> Outcome<'a> {
    let reason = finish_reason(ending);
    let verdict = match ending {
        RunEnding::Exited { code: 0 } => format!("completed (exit status 0) after {took:.1}s"),
        RunEnding::Exited { code } => format!("failed with exit status {code} after {took:.1}s"),
        RunEnding::Killed { signal } => format!("was killed by signal {signal} after {took:.1}s"),
        RunEnding::TimedOut { limit_secs } => format!(
            "reached its timeout (timeout_secs = {limit_secs}) and was stopped after {took:.1}s"
        ),
        RunEnding::Interrupted => format!("was interrupted after {took:.1}s"),
        RunEnding::Fenced => {
            format!("was stopped after {took:.1}s: its lease could not be renewed")
        }
        RunEnding::NotLaunched { why } => why.clone(),
        _ => format!("ended after {took:.1}s"),
    };
    Outcome {
        target: runtime::destination(&reason, lost, role),
        completed: reason == FinishReason::Completed,
        reason,
        verdict,
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

    /// Each ending's state, finish reason and words: the limit named once,
    /// the duration once.
    #[test]
    fn every_ending_has_its_outcome() {
        let role = role();
        let of = |ending: RunEnding| outcome_of(&ending, 4.04, &role, 0);
        assert_eq!(
            of(RunEnding::Exited { code: 0 }),
            Outcome {
                target: "Done",
                reason: FinishReason::Completed,
                verdict: "completed (exit status 0) after 4.0s".into(),
                completed: true
            }
        );
        let failed = of(RunEnding::Exited { code: 3 });
        assert_eq!(
            (failed.target, failed.verdict.as_str()),
            ("Blocked", "failed with exit status 3 after 4.0s")
        );
        let killed = of(RunEnding::Killed { signal: 9 });
        assert_eq!(
            (killed.target, killed.verdict.as_str()),
            ("Blocked", "was killed by signal 9 after 4.0s")
        );
        let timed_out = of(RunEnding::TimedOut { limit_secs: 4 });
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
        let interrupted = of(RunEnding::Interrupted);
        assert_eq!(
            (interrupted.target, interrupted.reason),
            ("Ready for AI", FinishReason::Interrupted)
        );
        let unlaunched = of(RunEnding::NotLaunched {
            why: "could not start the executor \"x\": not found".into(),
        });
        assert_eq!(
            (unlaunched.target, unlaunched.verdict.as_str()),
            ("Blocked", "could not start the executor \"x\": not found")
        );
    }
}
