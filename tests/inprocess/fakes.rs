//! The runner's edges for in-process tests under tokio's paused clock: a
//! Plane board in memory, executors that live in virtual time, a clock that
//! follows tokio's, and a store that notes each lease renewal. Everything
//! else the runner uses is real (the redb ledger in a temporary folder, the
//! configuration file, the cap rule, the orphan rules, the Linux probe).
//!
//! Real HTTP and real processes cannot be used here: tokio's paused clock
//! jumps to the next timer whenever the runtime waits on I/O, so a request
//! to plane-sim would time out at once and a real executor would be timed
//! out before it printed a line. The e2e suite covers those parts.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ledger_core::{Clock, ExecutorIdentity, ProcessIdentity, RunId, SlotKey, Timestamp};
use plane_client::{
    Label, PlaneError, State, StateGroup, StateLite, StateRef, WorkItem, same_name,
};
use runtime::{Plane, PlaneFuture};
use tokio::sync::watch;
use tokio::time::Instant;
use watcher_bin::{Executor, Launch, LaunchFuture, Launcher, OutputTail};

/// Virtual seconds since `origin`, to the millisecond.
fn since(origin: Instant) -> Duration {
    let elapsed = origin.elapsed();
    Duration::from_millis(elapsed.as_millis() as u64)
}

// ---------------------------------------------------------------- Plane

/// A call the runner made, when (virtual time since the board was made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub at: Duration,
    pub what: String,
}

#[derive(Debug, Default)]
struct BoardState {
    states: Vec<State>,
    items: Vec<WorkItem>,
    comments: HashMap<String, Vec<String>>,
    calls: Vec<Call>,
    /// Calls whose name starts with the key fail with the error, this many
    /// more times.
    failing: Vec<(String, PlaneError, u32)>,
    /// Calls whose name starts with the key wait this long before they are
    /// answered, as the client does while it waits for rate budget.
    stalled: Vec<(String, Duration)>,
}

/// A Plane project in memory: states, work items, comments.
#[derive(Debug, Clone)]
pub struct Board {
    origin: Instant,
    inner: Arc<Mutex<BoardState>>,
}

impl Board {
    /// A project with the states the test configuration's roles use.
    pub fn new() -> Self {
        let state = |id: &str, name: &str, group: StateGroup| State {
            id: id.into(),
            name: name.into(),
            group,
            sequence: 0.0,
            default: false,
        };
        let inner = BoardState {
            states: vec![
                state("s-ready", "Ready for AI", StateGroup::Unstarted),
                state("s-running", "Running", StateGroup::Started),
                state("s-done", "Done", StateGroup::Completed),
                state("s-blocked", "Blocked", StateGroup::Backlog),
            ],
            ..BoardState::default()
        };
        Self {
            origin: Instant::now(),
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.inner.lock().unwrap()
    }

    /// Adds a work item in `state`; its id.
    pub fn add_task(&self, name: &str, state: &str) -> String {
        let mut inner = self.lock();
        let n = inner.items.len() as u64 + 1;
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let state = lite(&inner.states, state).unwrap();
        inner.items.push(WorkItem {
            id: id.clone(),
            name: name.into(),
            sequence_id: Some(n),
            state: StateRef::Expanded(state),
            labels: Vec::new(),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(n),
            updated_at: None,
            priority: None,
            project: None,
        });
        id
    }

    /// The name of `id`'s state.
    pub fn state_of(&self, id: &str) -> String {
        let inner = self.lock();
        let item = inner.items.iter().find(|i| i.id == id).unwrap();
        match &item.state {
            StateRef::Expanded(state) => state.name.clone(),
            StateRef::Id(id) => id.clone(),
        }
    }

    /// The comments on `id`, oldest first.
    pub fn comments(&self, id: &str) -> Vec<String> {
        self.lock().comments.get(id).cloned().unwrap_or_default()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// When each call named `what` (or starting so) was made.
    pub fn times_of(&self, what: &str) -> Vec<Duration> {
        self.calls()
            .into_iter()
            .filter(|c| c.what.starts_with(what))
            .map(|c| c.at)
            .collect()
    }

    /// The next `times` calls starting with `what` fail with `error`.
    pub fn fail(&self, what: &str, error: PlaneError, times: u32) {
        self.lock().failing.push((what.into(), error, times));
    }

    /// Calls starting with `what` take `wait` to be answered.
    pub fn stall(&self, what: &str, wait: Duration) {
        self.lock().stalled.push((what.into(), wait));
    }

    /// Drops a state from the project.
    pub fn remove_state(&self, name: &str) {
        self.lock().states.retain(|s| !same_name(&s.name, name));
    }

    /// Records the call, then fails, waits or lets it through.
    async fn call(&self, what: String) -> Result<(), PlaneError> {
        let wait = {
            let mut inner = self.lock();
            let at = since(self.origin);
            inner.calls.push(Call {
                at,
                what: what.clone(),
            });
            if let Some(rule) = inner
                .failing
                .iter_mut()
                .find(|(prefix, _, times)| what.starts_with(prefix.as_str()) && *times > 0)
            {
                rule.2 -= 1;
                return Err(rule.1.clone());
            }
            inner
                .stalled
                .iter()
                .find(|(prefix, _)| what.starts_with(prefix.as_str()))
                .map(|(_, wait)| *wait)
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

fn lite(states: &[State], name: &str) -> Option<StateLite> {
    states
        .iter()
        .find(|s| same_name(&s.name, name))
        .map(|s| StateLite {
            id: s.id.clone(),
            name: s.name.clone(),
            group: s.group.clone(),
        })
}

fn not_found(id: &str) -> PlaneError {
    PlaneError::NotFound {
        path: format!("work-items/{id}/"),
    }
}

impl Plane for Board {
    fn probe_project(&self) -> PlaneFuture<'_, u64> {
        Box::pin(async {
            self.call("probe".into()).await?;
            Ok(self.lock().items.len() as u64)
        })
    }

    fn get_work_item<'a>(&'a self, id: &'a str) -> PlaneFuture<'a, WorkItem> {
        Box::pin(async move {
            self.call(format!("get {id}")).await?;
            let inner = self.lock();
            inner
                .items
                .iter()
                .find(|i| i.id == id)
                .cloned()
                .ok_or_else(|| not_found(id))
        })
    }

    fn project_identifier(&self) -> PlaneFuture<'_, String> {
        Box::pin(async {
            self.call("project".into()).await?;
            Ok("ROCK".to_owned())
        })
    }

    fn work_item_by_identifier<'a>(&'a self, identifier: &'a str) -> PlaneFuture<'a, WorkItem> {
        Box::pin(async move {
            self.call(format!("get {identifier}")).await?;
            let number = identifier
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse().ok());
            let inner = self.lock();
            inner
                .items
                .iter()
                .find(|i| number.is_some() && i.sequence_id == number)
                .cloned()
                .ok_or_else(|| not_found(identifier))
        })
    }

    fn list_work_items(&self) -> PlaneFuture<'_, Vec<WorkItem>> {
        Box::pin(async {
            self.call("list".into()).await?;
            Ok(self.lock().items.clone())
        })
    }

    fn list_work_item_states(&self) -> PlaneFuture<'_, Vec<WorkItem>> {
        Box::pin(async {
            self.call("list".into()).await?;
            let inner = self.lock();
            Ok(inner
                .items
                .iter()
                .map(|item| {
                    let mut item = item.clone();
                    if let StateRef::Id(id) = &item.state
                        && let Some(s) = inner.states.iter().find(|s| &s.id == id)
                    {
                        item.state = StateRef::Expanded(StateLite {
                            id: s.id.clone(),
                            name: s.name.clone(),
                            group: s.group.clone(),
                        });
                    }
                    item
                })
                .collect())
        })
    }

    fn states(&self) -> PlaneFuture<'_, Arc<Vec<State>>> {
        Box::pin(async {
            self.call("states".into()).await?;
            Ok(Arc::new(self.lock().states.clone()))
        })
    }

    fn refresh_states(&self) -> PlaneFuture<'_, Arc<Vec<State>>> {
        self.states()
    }

    fn labels(&self) -> PlaneFuture<'_, Arc<Vec<Label>>> {
        Box::pin(async {
            self.call("labels".into()).await?;
            Ok(Arc::new(Vec::new()))
        })
    }

    fn refresh_labels(&self) -> PlaneFuture<'_, Arc<Vec<Label>>> {
        self.labels()
    }

    fn labels_age(&self) -> Option<Duration> {
        None
    }

    fn set_state<'a>(&'a self, id: &'a str, state: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            self.call(format!("set_state {state}")).await?;
            let mut inner = self.lock();
            let Some(lite) = lite(&inner.states, state) else {
                return Err(PlaneError::UnknownState {
                    name: state.into(),
                    available: String::new(),
                });
            };
            let item = inner
                .items
                .iter_mut()
                .find(|i| i.id == id)
                .ok_or_else(|| not_found(id))?;
            item.state = StateRef::Expanded(lite);
            Ok(())
        })
    }

    fn post_comment<'a>(&'a self, id: &'a str, html: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            self.call("comment".into()).await?;
            let mut inner = self.lock();
            inner
                .comments
                .entry(id.to_owned())
                .or_default()
                .push(html.to_owned());
            Ok(())
        })
    }

    fn is_terminal(&self, state: &StateLite) -> bool {
        matches!(state.group, StateGroup::Completed | StateGroup::Cancelled)
    }
}

// ------------------------------------------------------------ executors

/// How a virtual executor behaves.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// Exits with `code` after running for `after`.
    Exits { after: Duration, code: i32 },
    /// Runs until SIGTERM, then exits at once.
    RunsUntilTerm,
    /// Ignores SIGTERM; only SIGKILL ends it.
    IgnoresTerm,
}

/// What happened to one executor, in virtual time since the launcher was
/// made.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub launch: Option<Launch>,
    pub started_at: Option<Duration>,
    pub abandoned: bool,
    pub signals: Vec<(i32, Duration)>,
    pub ended_at: Option<Duration>,
    pub cleaned_up: bool,
}

/// Starts virtual executors, each following the script it was given.
#[derive(Debug, Clone)]
pub struct Executors {
    origin: Instant,
    script: Script,
    runs: Arc<Mutex<Vec<Run>>>,
}

impl Executors {
    pub fn new(script: Script) -> Self {
        Self {
            origin: Instant::now(),
            script,
            runs: Arc::default(),
        }
    }

    /// Every executor launched so far.
    pub fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }
}

impl Launcher for Executors {
    fn launch<'a>(&'a self, launch: &'a Launch) -> LaunchFuture<'a, io::Result<Box<dyn Executor>>> {
        Box::pin(async move {
            let mut runs = self.runs.lock().unwrap();
            runs.push(Run {
                launch: Some(launch.clone()),
                ..Run::default()
            });
            let (signals, received) = watch::channel(None);
            Ok(Box::new(VirtualExecutor {
                index: runs.len() - 1,
                origin: self.origin,
                script: self.script,
                runs: self.runs.clone(),
                started: None,
                signals,
                received,
            }) as Box<dyn Executor>)
        })
    }
}

#[derive(Debug)]
struct VirtualExecutor {
    index: usize,
    origin: Instant,
    script: Script,
    runs: Arc<Mutex<Vec<Run>>>,
    started: Option<Instant>,
    signals: watch::Sender<Option<i32>>,
    received: watch::Receiver<Option<i32>>,
}

impl VirtualExecutor {
    fn record(&self, f: impl FnOnce(&mut Run)) {
        f(&mut self.runs.lock().unwrap()[self.index]);
    }

    /// Pids far above any the kernel hands out, so that no real process
    /// is ever mistaken for one.
    fn pid(&self) -> u32 {
        4_100_000 + self.index as u32
    }
}

impl Executor for VirtualExecutor {
    fn identity(&self) -> Result<ExecutorIdentity, String> {
        Ok(ExecutorIdentity {
            process: ProcessIdentity {
                pid: self.pid(),
                start_time: 1,
            },
            process_group: self.pid(),
        })
    }

    fn start(&mut self) -> io::Result<()> {
        self.started = Some(Instant::now());
        let at = since(self.origin);
        self.record(|run| run.started_at = Some(at));
        Ok(())
    }

    fn abandon(&mut self) {
        self.record(|run| run.abandoned = true);
    }

    fn output(&mut self) -> OutputTail {
        OutputTail::default()
    }

    fn wait(&mut self) -> LaunchFuture<'_, io::Result<ExitStatus>> {
        Box::pin(async move {
            let status = match self.started {
                // A gate closed unopened: the executor never ran.
                None => ExitStatus::from_raw(125 << 8),
                Some(started) => {
                    let mut received = self.received.clone();
                    let deadline = match self.script {
                        Script::Exits { after, .. } => Some(started + after),
                        _ => None,
                    };
                    let ends = |signal: Option<i32>| match (self.script, signal) {
                        (_, Some(libc::SIGKILL)) => Some(ExitStatus::from_raw(libc::SIGKILL)),
                        (Script::IgnoresTerm, _) | (_, None) => None,
                        (_, Some(signal)) => Some(ExitStatus::from_raw(signal)),
                    };
                    loop {
                        if let Some(status) = ends(*received.borrow_and_update()) {
                            break status;
                        }
                        let sleep = async {
                            match deadline {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = sleep => match self.script {
                                Script::Exits { code, .. } => break ExitStatus::from_raw(code << 8),
                                _ => unreachable!(),
                            },
                            _ = received.changed() => {}
                        }
                    }
                }
            };
            let at = since(self.origin);
            self.record(|run| {
                run.ended_at.get_or_insert(at);
            });
            Ok(status)
        })
    }

    fn signal(&self, signal: i32) -> io::Result<()> {
        let at = since(self.origin);
        self.record(|run| run.signals.push((signal, at)));
        let _ = self.signals.send(Some(signal));
        Ok(())
    }

    fn clean_up(
        &self,
        _identity: &ExecutorIdentity,
        _grace: Duration,
    ) -> LaunchFuture<'static, ()> {
        self.record(|run| run.cleaned_up = true);
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------- clock

/// Wall-clock timestamps that move with tokio's (paused) clock.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    origin: Instant,
    wall: Timestamp,
}

impl VirtualClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            wall: ledger_core::SystemClock.now(),
        }
    }
}

impl VirtualClock {
    /// Now, on a fresh clock: the wall clock at tokio's present instant.
    pub fn now_for_test(&self) -> Timestamp {
        self.now()
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        self.wall.saturating_add(self.origin.elapsed())
    }
}

// ---------------------------------------------------------------- store

/// The real store, noting when each lease renewal came (virtual time since
/// the store was wrapped) and the expiry it set; it can be cut off, as a
/// database is by a partition.
#[derive(Debug)]
pub struct RenewalLog {
    inner: Arc<dyn ledger_core::Store>,
    origin: Instant,
    renewals: Mutex<Vec<(Duration, Timestamp)>>,
    cut_off: std::sync::atomic::AtomicBool,
    lose_admit_answer: std::sync::atomic::AtomicBool,
    hang: std::sync::atomic::AtomicBool,
}

impl RenewalLog {
    pub fn new(inner: Arc<dyn ledger_core::Store>) -> Self {
        Self {
            inner,
            origin: Instant::now(),
            renewals: Mutex::default(),
            cut_off: std::sync::atomic::AtomicBool::new(false),
            lose_admit_answer: std::sync::atomic::AtomicBool::new(false),
            hang: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The next admission commits, but its caller gets an error (the
    /// connection died before the answer came back).
    pub fn lose_next_admit_answer(&self) {
        self.lose_admit_answer
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on (or no longer), every call of the ledger's waits: a
    /// store that stopped answering, without an error.
    pub fn hang(&self, on: bool) {
        self.hang.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on (or no longer), renewals and finishes fail as they do
    /// when the database cannot be reached.
    pub fn cut_off(&self, cut: bool) {
        self.cut_off.store(cut, std::sync::atomic::Ordering::SeqCst);
    }

    fn reachable(&self) -> ledger_core::Result<()> {
        if self.cut_off.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ledger_core::LedgerError::Database {
                location: self.inner.location(),
                source: "connection refused (cut off by the test)".into(),
            });
        }
        Ok(())
    }

    /// Each renewal: when, and the lease's new end.
    pub fn renewals(&self) -> Vec<(Duration, Timestamp)> {
        self.renewals.lock().unwrap().clone()
    }
}

impl RenewalLog {
    /// Refuses what a partition refuses.
    fn before(&self, call: &str) -> ledger_core::Result<()> {
        while self.hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        match call {
            "finish" | "renew_leases" | "set_holder" => self.reachable(),
            _ => Ok(()),
        }
    }

    /// Notes each renewal that renewed something (when, and the lease's
    /// new end), and loses an admission's answer when asked to.
    fn after(&self, call: &str, answer: &dyn std::any::Any) -> ledger_core::Result<()> {
        let renewed = match call {
            "renew_leases" => answer
                .downcast_ref::<Vec<(SlotKey, RunId)>>()
                .is_some_and(|renewed| !renewed.is_empty()),
            "renew_lease" => true,
            "admit"
                if self
                    .lose_admit_answer
                    .swap(false, std::sync::atomic::Ordering::SeqCst) =>
            {
                return Err(ledger_core::LedgerError::Database {
                    location: self.inner.location(),
                    source: "connection closed before the answer (the commit landed)".into(),
                });
            }
            _ => false,
        };
        if renewed {
            let until = self.inner.open_slots()?.iter().map(|s| s.lease_until).max();
            if let Some(until) = until {
                self.renewals
                    .lock()
                    .unwrap()
                    .push((since(self.origin), until));
            }
        }
        Ok(())
    }
}

// Every call goes to the real store, through the partition and the log.
ledger_core::forward_ledger_store!(RenewalLog, |this| this.inner.clone(),
    location: |this| this.inner.location(),
    before: |this, call| this.before(call),
    after: |this, call, answer| this.after(call, answer));

// The fleet's calls go to the real store unchanged.
ledger_core::forward_fleet_store!(RenewalLog, |this| this.inner.clone());
