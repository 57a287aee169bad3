//! The runner driven in-process under tokio's paused clock: its waits (the
//! poll interval, a backoff, a role's re-check, Plane's rate budget, an
//! executor's run and grace period), its lease renewals and its executor
//! timeout, each checked to the millisecond of virtual time in a fraction
//! of a second of real time. See `fakes.rs` for what is real here.

mod fakes;

use std::sync::Arc;
use std::time::Duration;

use fakes::{Board, Executors, RenewalLog, Script, VirtualClock};
use inflight_e2e::{TestConfig, TestRole};
use ledger_core::{EventKind, FinishReason, FleetStore, LedgerStore};
use plane_client::PlaneError;
use runtime::{Config, HostIdentity, LinuxProcessProbe};
use tokio::time::Instant;
use watchdog_bin::{ScanDependencies, Scanner};
use watcher_bin::{Dependencies, InProcessKeepers, Keeper, Keepers, LaunchFuture, Runner, Summary};

/// The test's own store calls. They block the test's runtime on purpose:
/// nothing of the service runs meanwhile and virtual time stands still.
/// (The service's own calls are checked: a debug build refuses a store
/// call on a runtime's thread, see `runtime::open_store`.)
fn test_side<T>(call: impl FnOnce() -> T) -> T {
    ledger_core::blocking::may_block(call)
}

/// A runner's world: its configuration, ledger, board and executors.
struct Rig {
    _dir: tempfile::TempDir,
    config: Config,
    store: Arc<RenewalLog>,
    board: Board,
    executors: Executors,
    started: Instant,
    real: std::time::Instant,
}

impl Rig {
    /// `extra` adds lines to the configuration's tables.
    fn new(script: Script, extra: &[(&'static str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = TestConfig {
            // Never dialled: the board is in memory.
            base_url: "http://127.0.0.1:9".into(),
            project_id: "11111111-1111-4111-8111-111111111111".into(),
            key_env: "INFLIGHT_INPROCESS_UNUSED_KEY".into(),
            command: vec!["./run-task.sh".into()],
            cap: 1,
            roles: vec![TestRole::new("goal", "Ready for AI")],
            extra: extra.iter().map(|(t, l)| (*t, (*l).to_owned())).collect(),
        };
        let path = dir.path().join("inflight.toml");
        std::fs::write(&path, config.render()).unwrap();
        let config = Config::load(&path).unwrap();
        let store = Arc::new(RenewalLog::new(test_side(|| {
            runtime::open_store(&config).unwrap()
        })));
        Self {
            _dir: dir,
            config,
            store,
            board: Board::new(),
            executors: Executors::new(script),
            started: Instant::now(),
            real: std::time::Instant::now(),
        }
    }

    fn probe(&self) -> Arc<LinuxProcessProbe> {
        let host = HostIdentity::current().unwrap();
        Arc::new(LinuxProcessProbe::new(host, self.config.watcher.grace))
    }

    fn runner(&self, once: bool) -> Runner {
        let keepers = InProcessKeepers::new(
            self.config.clone(),
            self.store.clone(),
            Arc::new(self.executors.clone()),
            Arc::new(VirtualClock::new()),
        )
        .unwrap();
        self.runner_with(once, Arc::new(keepers))
    }

    fn runner_with(&self, once: bool, keepers: Arc<dyn Keepers>) -> Runner {
        let dependencies = Dependencies {
            store: self.store.clone(),
            plane: Arc::new(self.board.clone()),
            probe: self.probe(),
            keepers,
            clock: Arc::new(VirtualClock::new()),
        };
        Runner::with_dependencies(self.config.clone(), "goal", once, dependencies).unwrap()
    }

    fn scanner(&self) -> Scanner {
        let dependencies = ScanDependencies {
            store: self.store.clone(),
            plane: Arc::new(self.board.clone()),
            probe: self.probe(),
            clock: Arc::new(VirtualClock::new()),
        };
        Scanner::with_dependencies(self.config.clone(), dependencies)
    }

    /// Runs the runner until it returns, sending the shutdown signal `stop`
    /// after the start (never, for `None`); the summary and the virtual
    /// time it returned at.
    async fn run(&self, once: bool, stop: Option<Duration>) -> (Summary, Duration) {
        let shutdown = async move {
            match stop {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        let summary = self.runner(once).run(shutdown).await.unwrap();
        (summary, self.started.elapsed())
    }

    /// A rig whose `[webhook]` listens on a free loopback port (the
    /// secret is given to the scanner: see `watchdog_run`), and the port.
    fn receiving_webhooks() -> (Self, u16) {
        let port = free_port();
        let listen = format!("listen = \"127.0.0.1:{port}\"");
        let rig = Rig::new(
            Script::RunsUntilTerm,
            &[
                ("webhook", listen.as_str()),
                (
                    "webhook",
                    "secret_env = \"INFLIGHT_INPROCESS_UNUSED_SECRET\"",
                ),
            ],
        );
        (rig, port)
    }

    /// Opens a slot for `task` held by a runner of this host that is gone
    /// (this process's pid with another start time: the pid reused).
    fn open_dead_slot(&self, task: &str) {
        let mut owner = runtime::this_owner(&HostIdentity::current().unwrap()).unwrap();
        owner.runner.start_time = 1;
        owner.role = Some("goal".into());
        owner.project = Some(self.config.project());
        test_side(|| inflight_e2e::open_test_slot(&*self.store, task, owner, secs(300)));
    }

    /// How each slot finished, in order.
    fn finishes(&self) -> Vec<FinishReason> {
        test_side(|| self.store.events_after(0, 1000).unwrap())
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Finished { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    fn open_slots(&self) -> usize {
        test_side(|| self.store.open_slots().unwrap().len())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Not asserted (no timed assertions), but shown with --nocapture:
        // these tests exist to be fast.
        eprintln!(
            "virtual {:?} in real {:?}",
            self.started.elapsed(),
            self.real.elapsed()
        );
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The gaps between consecutive times.
fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn an_idle_runner_looks_once_per_poll_interval_and_stops_mid_wait() {
    let rig = Rig::new(
        Script::RunsUntilTerm,
        &[("watcher", "poll_interval_secs = 30")],
    );
    // Stopped a third of the way into its fourth wait.
    let (summary, stopped_at) = rig.run(false, Some(secs(100))).await;
    assert_eq!(summary, Summary::default());
    assert_eq!(
        rig.board.times_of("list"),
        [secs(0), secs(30), secs(60), secs(90)]
    );
    assert_eq!(
        stopped_at,
        secs(100),
        "it stops at once, not at the next look"
    );
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_every_third_of_it_while_the_executor_runs() {
    let rig = Rig::new(
        Script::Exits {
            after: secs(95),
            code: 0,
        },
        &[("watcher", "lease_secs = 30")],
    );
    let task = rig.board.add_task("Write the docs", "Ready for AI");
    let (summary, _) = rig.run(true, None).await;
    assert_eq!((summary.dispatched, summary.completed), (1, 1));

    let run = &rig.executors.runs()[0];
    let launch = run.launch.as_ref().unwrap();
    assert!(launch.env.contains(&("INFLIGHT_TASK_ID", task.clone())));
    // The key, and systemd's notify variables (the executor must not speak
    // for the runner).
    assert_eq!(
        launch.env_remove,
        [
            rig.config.plane.api_key_env.as_str(),
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID"
        ]
    );
    let started = run.started_at.unwrap();
    assert_eq!(run.ended_at, Some(started + secs(95)));
    let renewals = rig.store.renewals();
    let times: Vec<Duration> = renewals.iter().map(|(at, _)| *at).collect();
    // Every 10 s from the start, nine times in 95 s.
    assert_eq!(times.len(), 9, "{times:?}");
    assert_eq!(times[0] - started, secs(10));
    assert!(gaps(&times).iter().all(|gap| *gap == secs(10)), "{times:?}");
    // Each extends the lease to a full lease from the renewal.
    let (first_at, first_until) = renewals[0];
    for (at, until) in &renewals {
        assert_eq!(until.duration_since(first_until), *at - first_at);
    }

    assert_eq!(rig.board.state_of(&task), "Done");
    let comments = rig.board.comments(&task);
    assert!(
        comments[0].contains("completed (exit status 0) after 95.0s. Moved to Done."),
        "{comments:?}"
    );
    assert_eq!(rig.finishes(), [FinishReason::Completed]);
    assert_eq!(rig.open_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_executor_past_its_timeout_is_stopped_and_its_task_blocked() {
    let rig = Rig::new(
        Script::RunsUntilTerm,
        &[("backends.local", "timeout_secs = 60")],
    );
    let task = rig.board.add_task("Loop forever", "Ready for AI");
    let (summary, _) = rig.run(true, None).await;
    assert_eq!((summary.dispatched, summary.completed), (1, 0));

    let run = &rig.executors.runs()[0];
    let started = run.started_at.unwrap();
    assert_eq!(run.signals, [(libc::SIGTERM, started + secs(60))]);
    assert_eq!(run.ended_at, Some(started + secs(60)));
    assert!(run.cleaned_up, "what it left in its group is terminated");
    assert_eq!(rig.board.state_of(&task), "Blocked");
    let comments = rig.board.comments(&task);
    assert!(
        comments[0].contains(
            "reached its timeout (timeout_secs = 60) and was stopped after 60.0s. Moved to Blocked."
        ),
        "{comments:?}"
    );
    assert_eq!(rig.finishes(), [FinishReason::Failed]);
}

#[tokio::test(start_paused = true)]
async fn an_executor_that_ignores_sigterm_at_its_timeout_is_killed_after_the_grace_period() {
    let rig = Rig::new(
        Script::IgnoresTerm,
        &[
            ("backends.local", "timeout_secs = 60"),
            ("watcher", "grace_secs = 5"),
        ],
    );
    let task = rig.board.add_task("Ignore signals", "Ready for AI");
    rig.run(true, None).await;
    let run = &rig.executors.runs()[0];
    let started = run.started_at.unwrap();
    assert_eq!(
        run.signals,
        [
            (libc::SIGTERM, started + secs(60)),
            (libc::SIGKILL, started + secs(65))
        ]
    );
    assert_eq!(rig.board.state_of(&task), "Blocked");
    assert_eq!(rig.finishes(), [FinishReason::Failed]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_the_backoff_after_a_failed_board_stops_at_once() {
    let rig = Rig::new(
        Script::RunsUntilTerm,
        &[("watcher", "poll_interval_secs = 30")],
    );
    let unavailable = PlaneError::Server {
        path: "work-items/".into(),
        status: 503,
    };
    rig.board.fail("list", unavailable, 100);
    let (summary, stopped_at) = rig.run(false, Some(secs(10))).await;
    assert_eq!(summary, Summary::default());
    // Backing off 2 s, then 4 s, then 8 s, cut short at 10 s.
    let lists = rig.board.times_of("list");
    assert_eq!(
        gaps(&lists[lists.len() - 3..]),
        [secs(2), secs(4)],
        "{lists:?}"
    );
    assert_eq!(stopped_at, secs(10));
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_a_role_waits_for_its_names_to_resolve_stops_at_once() {
    let rig = Rig::new(Script::RunsUntilTerm, &[("plane", "cache_secs = 300")]);
    rig.board.add_task("Never claimed", "Ready for AI");
    rig.board.remove_state("Blocked");
    let (summary, stopped_at) = rig.run(false, Some(secs(5))).await;
    assert_eq!(summary, Summary::default());
    assert_eq!(stopped_at, secs(5));
    assert!(
        rig.board.times_of("set_state").is_empty(),
        "nothing is claimed"
    );
    assert!(rig.finishes().is_empty(), "nothing is admitted");
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_plane_withholds_its_budget_starts_nothing_and_is_bounded() {
    let rig = Rig::new(Script::RunsUntilTerm, &[]);
    let task = rig.board.add_task("Wait for budget", "Ready for AI");
    // As the client does when the rate window is spent: a minute's wait
    // before each state change goes out.
    rig.board.stall("set_state", secs(60));
    let (summary, stopped_at) = rig.run(false, Some(secs(2))).await;
    assert_eq!(summary, Summary::default());
    assert!(rig.executors.runs().is_empty(), "no executor is started");
    assert_eq!(rig.board.state_of(&task), "Ready for AI");
    assert_eq!(rig.finishes(), [FinishReason::NotStarted]);
    assert_eq!(rig.open_slots(), 0);
    // Marking it running gets 1.5 s past the stop to answer; unanswered,
    // the task is left to the next look's repair (had the move gone
    // through), and nothing is "put back" from a state it never reached.
    assert_eq!(
        rig.board.times_of("set_state"),
        [secs(0)],
        "{:?}",
        rig.board.calls()
    );
    assert_eq!(stopped_at, Duration::from_millis(3500));
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_the_executor_runs_interrupts_it_and_puts_the_task_back() {
    let rig = Rig::new(
        Script::RunsUntilTerm,
        &[("watcher", "on_stop = \"interrupt\"")],
    );
    let task = rig.board.add_task("Long job", "Ready for AI");
    let (summary, stopped_at) = rig.run(false, Some(secs(20))).await;
    assert_eq!(summary.dispatched, 1);
    let run = &rig.executors.runs()[0];
    assert_eq!(run.signals, [(libc::SIGTERM, secs(20))]);
    assert_eq!(run.ended_at, Some(secs(20)));
    assert_eq!(rig.board.state_of(&task), "Ready for AI");
    let comments = rig.board.comments(&task);
    assert!(
        comments[0].contains("was interrupted after 20.0s. Moved to Ready for AI."),
        "{comments:?}"
    );
    assert_eq!(rig.finishes(), [FinishReason::Interrupted]);
    assert_eq!(stopped_at, secs(20));
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_an_executor_ignores_sigterm_waits_out_the_grace_period_then_kills() {
    let rig = Rig::new(
        Script::IgnoresTerm,
        &[("watcher", "grace_secs = 5\non_stop = \"interrupt\"")],
    );
    let task = rig.board.add_task("Stubborn job", "Ready for AI");
    let (_, stopped_at) = rig.run(false, Some(secs(20))).await;
    let run = &rig.executors.runs()[0];
    assert_eq!(
        run.signals,
        [(libc::SIGTERM, secs(20)), (libc::SIGKILL, secs(25))]
    );
    assert_eq!(rig.board.state_of(&task), "Ready for AI");
    assert_eq!(rig.finishes(), [FinishReason::Interrupted]);
    assert_eq!(stopped_at, secs(25));
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `watchdog run` in-process: started with `options` (its interval 60 s),
/// stopped by `stop`; the scan times it reported, and the virtual time it
/// returned at.
async fn watchdog_run(
    rig: &Rig,
    options: watchdog_bin::RunOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Vec<ledger_core::Timestamp>, Duration) {
    let scanner = rig
        .scanner()
        .with_webhook_secret(plane_client::webhook::WebhookSecret::new(HOOK_SECRET));
    let mut scanned = Vec::new();
    watchdog_bin::run(scanner, options, stop, |report| {
        let report = report.unwrap();
        assert!(report.project.ok, "{report:?}");
        scanned.push(report.scanned_at);
    })
    .await
    .unwrap();
    (scanned, rig.started.elapsed())
}

const HOOK_SECRET: &str = "plane_wh_inprocess";

/// POSTs one signed delivery saying work item `id` entered `state`; the
/// status line of the answer.
async fn deliver(port: u16, project: &str, id: &str, state: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({
        "event": "issue",
        "action": "updated",
        "webhook_id": "w1",
        "workspace_id": "ws1",
        "data": {
            "id": id,
            "name": "Hinted",
            "project": project,
            "state": {"id": "s1", "name": state, "group": "unstarted", "color": "#3a3a3a"},
            "labels": [],
            "created_at": "2026-12-01T00:00:00Z",
        },
        "activity": {"field": "state"},
    })
    .to_string();
    let secret = plane_client::webhook::WebhookSecret::new(HOOK_SECRET);
    let signature = plane_client::webhook::sign(&secret, body.as_bytes());
    let mut tries = 0;
    let mut stream = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => break stream,
            // Not listening yet.
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("nothing listens for webhooks on port {port}: {e}"),
        }
    };
    let request = format!(
        "POST /plane HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         x-plane-delivery: d-{id}\r\nx-plane-event: issue\r\nx-plane-signature: {signature}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(start_paused = true)]
async fn watchdog_run_scans_each_interval_records_webhook_hints_and_rewrites_its_textfile() {
    let (rig, port) = Rig::receiving_webhooks();
    let task = rig.board.add_task("Idle", "Ready for AI");
    let textfile = rig._dir.path().join("inflight.prom");
    let options = watchdog_bin::RunOptions {
        interval: secs(60),
        apply: true,
        metrics_addr: None,
        textfile: Some(textfile.clone()),
        http: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let project = rig.config.plane.project_id.clone();
    let (store, board) = (rig.store.clone(), runtime::board_key(&rig.config));
    let textfile_read = textfile.clone();
    let checks = tokio::spawn(async move {
        // A delivery for a task entering the role's claim state: answered
        // 200, and a hint naming it is in the store.
        assert_eq!(
            deliver(port, &project, &task, "Ready for AI").await,
            "HTTP/1.1 200 OK"
        );
        let hints = test_side(|| store.board_hints_after(&board, 0).unwrap());
        assert_eq!(hints.hints.len(), 1, "{hints:?}");
        assert!(
            String::from_utf8_lossy(&hints.hints[0]).contains(&task),
            "{hints:?}"
        );
        // One for a state no role claims: answered 200, no hint.
        assert_eq!(
            deliver(port, &project, "other", "Done").await,
            "HTTP/1.1 200 OK"
        );
        let hints = test_side(|| store.board_hints_after(&board, 0).unwrap());
        assert_eq!(hints.hints.len(), 1);
        tokio::time::sleep_until(Instant::now() + secs(150)).await;
        // Rewritten at 0, 60 and 120 s: the last one counts the scans
        // of 0 and 60 s at least.
        let text = std::fs::read_to_string(&textfile_read).unwrap();
        let scans: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("inflight_scan_duration_seconds_count "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no scan count in the textfile:\n{text}"));
        assert!(scans >= 2, "{scans} scans in the textfile:\n{text}");
        let _ = stop.send(());
    });
    let (scanned, returned) = watchdog_run(&rig, options, async {
        let _ = stopped.await;
    })
    .await;
    checks.await.unwrap();
    assert_eq!(returned, secs(150), "it stops at once");
    assert_eq!(scanned.len(), 3, "at 0, 60 and 120 s: {scanned:?}");
    let gaps: Vec<Duration> = scanned
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .collect();
    assert_eq!(gaps, [secs(60), secs(60)]);
}

#[tokio::test(start_paused = true)]
async fn watchdog_run_stops_at_once_whatever_it_waits_for() {
    let options = || watchdog_bin::RunOptions {
        interval: secs(60),
        apply: true,
        ..Default::default()
    };
    // Between two scans.
    let rig = Rig::new(Script::RunsUntilTerm, &[]);
    let (scanned, returned) = watchdog_run(&rig, options(), tokio::time::sleep(secs(90))).await;
    assert_eq!((scanned.len(), returned), (2, secs(90)));
    // In a scan waiting for Plane's answer (about a slot a gone runner
    // left open).
    let rig = Rig::new(Script::RunsUntilTerm, &[]);
    let task = rig.board.add_task("Left open", "Ready for AI");
    rig.open_dead_slot(&task);
    rig.board.stall("", secs(600));
    let (scanned, returned) = watchdog_run(&rig, options(), tokio::time::sleep(secs(30))).await;
    assert_eq!((scanned.len(), returned), (0, secs(30)));
    // With the webhook listener and the textfile writer waiting too.
    let (rig, port) = Rig::receiving_webhooks();
    let with_all = watchdog_bin::RunOptions {
        textfile: Some(rig._dir.path().join("inflight.prom")),
        ..options()
    };
    let (scanned, returned) = watchdog_run(&rig, with_all, tokio::time::sleep(secs(10))).await;
    assert_eq!((scanned.len(), returned), (1, secs(10)));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the webhook listener is closed once run returns"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slot_reclaimed_while_held_stops_its_executor_at_the_next_renewal() {
    let rig = Rig::new(Script::RunsUntilTerm, &[("watcher", "lease_secs = 30")]);
    let task = rig.board.add_task("Reclaimed elsewhere", "Ready for AI");
    let store = rig.store.clone();
    // Another host's watchdog reclaims the slot 25 s into the run.
    let reclaim = tokio::spawn(async move {
        tokio::time::sleep(secs(25)).await;
        let slot = test_side(|| store.open_slots().unwrap().remove(0));
        let reason = FinishReason::Reconciled {
            rule: "LEASE_EXPIRED_CLEAR".into(),
        };
        let now = VirtualClock::new().now_for_test();
        test_side(|| {
            store
                .finish(&slot.key, Some(&slot.run_id), reason, now)
                .unwrap()
        });
    });
    let (_, stopped_at) = rig.run(false, Some(secs(40))).await;
    reclaim.await.unwrap();
    let run = &rig.executors.runs()[0];
    // Renewals every 10 s: the one at 30 s no longer returns the slot.
    assert_eq!(run.signals, [(libc::SIGTERM, secs(30))]);
    // This runner reports no outcome for the stopped run (whoever reclaimed
    // it puts the task back; here nobody did, so the next look at the board
    // repairs it from the ledger), and its own finish of the slot changes
    // nothing: the one finish is the reclaim's.
    let comments = rig.board.comments(&task);
    assert!(
        comments.iter().all(|c| !c.contains("on backend")),
        "{comments:?}"
    );
    assert!(
        matches!(rig.finishes().as_slice(), [FinishReason::Reconciled { .. }]),
        "{:?}",
        rig.finishes()
    );
    assert_eq!(stopped_at, secs(40));
}

#[tokio::test(start_paused = true)]
async fn a_runner_cut_off_from_its_ledger_stops_its_executor_before_the_lease_runs_out() {
    let rig = Rig::new(
        Script::IgnoresTerm,
        &[("watcher", "lease_secs = 30\ngrace_secs = 5")],
    );
    rig.board.add_task("First", "Ready for AI");
    rig.board.add_task("Second", "Ready for AI");
    let store = rig.store.clone();
    let partition = tokio::spawn(async move {
        // The renewal at 10 s gets through; from 15 s on nothing does,
        // until the database answers again at 100 s.
        tokio::time::sleep(secs(15)).await;
        store.cut_off(true);
        tokio::time::sleep(secs(85)).await;
        store.cut_off(false);
    });
    let (_, _) = rig.run(false, Some(secs(130))).await;
    partition.await.unwrap();
    let runs = rig.executors.runs();
    let first = &runs[0];
    // The lease, last renewed at 10 s, would run out at 40 s: stopping
    // begins at 40 - grace (5 s) - 1 s, and the executor is killed by the
    // end of its grace, before the lease runs out.
    assert_eq!(
        first.signals,
        [(libc::SIGTERM, secs(34)), (libc::SIGKILL, secs(39))]
    );
    assert!(first.ended_at.unwrap() < secs(40));
    // Nothing was admitted while the lease could not be renewed; the
    // second task waited for the ledger to answer.
    if let Some(second) = runs.get(1) {
        assert!(second.started_at.unwrap() >= secs(100), "{second:?}");
    }
    // The first slot's finish failed while cut off and went through once
    // the ledger answered.
    // ...with its own reason: a slot whose finish is pending is not taken
    // for a stray of a lost admission.
    assert_eq!(
        rig.finishes().first(),
        Some(&FinishReason::Interrupted),
        "{:?} {runs:#?}",
        rig.finishes()
    );
    // Its keeper recorded the run as fenced once the ledger answered, and
    // the runner put the task back (it may have been claimed again since,
    // as a new run).
    let first_run = runs[0]
        .launch
        .as_ref()
        .unwrap()
        .env
        .iter()
        .find(|(k, _)| *k == "INFLIGHT_RUN_ID")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        test_side(|| rig.store.open_slots().unwrap())
            .iter()
            .all(|slot| slot.run_id.as_str() != first_run),
        "the first run's slot is finished"
    );
    assert!(
        rig.board
            .comments(&runs[0].launch.as_ref().unwrap().task)
            .iter()
            .any(|c| c.contains("its lease could not be renewed. Moved to Ready for AI.")),
        "{:?}",
        rig.board.comments(&runs[0].launch.as_ref().unwrap().task)
    );
}

#[tokio::test(start_paused = true)]
async fn a_slot_whose_admission_answer_was_lost_is_finished_at_the_next_renewal() {
    let rig = Rig::new(
        Script::Exits {
            after: secs(5),
            code: 0,
        },
        &[("watcher", "lease_secs = 30\npoll_interval_secs = 30")],
    );
    let task = rig.board.add_task("Ambiguous", "Ready for AI");
    rig.store.lose_next_admit_answer();
    let (summary, _) = rig.run(false, Some(secs(90))).await;
    // The lost answer left a slot open in this runner's name with nothing
    // running: the renewal at 10 s found it and finished it; the task was
    // then admitted afresh and ran once.
    assert_eq!(summary.dispatched, 1);
    assert_eq!(rig.executors.runs().len(), 1);
    assert_eq!(rig.board.state_of(&task), "Done");
    assert_eq!(
        rig.finishes(),
        [FinishReason::NotStarted, FinishReason::Completed]
    );
    assert_eq!(rig.open_slots(), 0);
}

/// `comment = "failures"`: a completed run moves its task without a
/// comment (one Plane request saved per dispatch), a failed one still
/// says why; `comment = "never"` says nothing either way.
#[tokio::test(start_paused = true)]
async fn the_comment_policy_keeps_quiet_about_what_went_well() {
    for (policy, code, expected) in [
        ("failures", 0, 0),
        ("failures", 3, 1),
        ("never", 3, 0),
        ("always", 0, 1),
    ] {
        let line = format!("comment = {policy:?}");
        let rig = Rig::new(
            Script::Exits {
                after: secs(5),
                code,
            },
            &[("watcher", line.as_str())],
        );
        let task = rig.board.add_task("A job", "Ready for AI");
        let (summary, _) = rig.run(true, None).await;
        assert_eq!(summary.dispatched, 1);
        let moved_to = if code == 0 { "Done" } else { "Blocked" };
        assert_eq!(rig.board.state_of(&task), moved_to, "{policy}, exit {code}");
        let comments = rig.board.comments(&task);
        assert_eq!(
            comments.len(),
            expected,
            "{policy}, exit {code}: {comments:?}"
        );
        if expected == 1 {
            assert!(
                comments[0].contains(&format!("Moved to {moved_to}.")),
                "{comments:?}"
            );
        }
    }
}

/// Keepers that start and never take their slot over (a keeper stuck
/// opening a store that does not answer, say).
#[derive(Debug)]
struct StuckKeepers;

#[derive(Debug)]
struct StuckKeeper;

impl Keepers for StuckKeepers {
    fn start<'a>(
        &'a self,
        _job: &'a watcher_bin::KeeperJob,
    ) -> LaunchFuture<'a, std::io::Result<Box<dyn Keeper>>> {
        Box::pin(async { Ok(Box::new(StuckKeeper) as Box<dyn Keeper>) })
    }
    fn adopt(&self, _holder: &ledger_core::Owner) -> Box<dyn Keeper> {
        Box::new(StuckKeeper)
    }
}

impl Keeper for StuckKeeper {
    fn wait(&mut self) -> LaunchFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
    fn interrupt(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stop while a keeper is still taking its slot over does not wait for
/// it (the hand-over's 30-s limit): the runner exits at once and leaves the
/// run to the keeper. The slot stays open, held by the runner until the
/// keeper takes it; had the keeper died, the next sweep would reclaim it.
#[tokio::test(start_paused = true)]
async fn a_stop_while_a_keeper_takes_its_slot_leaves_the_run_to_it() {
    let rig = Rig::new(Script::RunsUntilTerm, &[]);
    rig.board.add_task("Handed late", "Ready for AI");
    let shutdown = tokio::time::sleep(secs(5));
    let summary = rig
        .runner_with(false, Arc::new(StuckKeepers))
        .run(shutdown)
        .await
        .unwrap();
    assert_eq!(rig.started.elapsed(), secs(5));
    assert_eq!(summary.dispatched, 1);
    assert_eq!(
        rig.open_slots(),
        1,
        "the slot was finished under its keeper"
    );
    assert!(rig.finishes().is_empty());
}

/// Plane refuses to move a finished task: one comment says so, not one
/// from the report and another from the repair that follows at the next
/// look at the board. The repair tries again later, quietly, and the task
/// gets where it belongs once Plane lets it.
#[tokio::test(start_paused = true)]
async fn a_refused_move_is_announced_once() {
    let rig = Rig::new(
        Script::Exits {
            after: secs(5),
            code: 0,
        },
        &[("watcher", "comment = \"failures\"")],
    );
    let task = rig.board.add_task("A job", "Ready for AI");
    rig.board.fail(
        "set_state Done",
        PlaneError::Server {
            path: "work-items/".into(),
            status: 500,
        },
        3,
    );
    let (summary, _) = rig.run(false, Some(secs(600))).await;
    assert_eq!(summary.dispatched, 1);
    assert_eq!(rig.board.state_of(&task), "Done");
    let comments = rig.board.comments(&task);
    let refusals = comments.iter().filter(|c| c.contains("refused")).count();
    assert_eq!(refusals, 1, "{comments:#?}");
    assert!(
        comments[0].contains("Plane refused to move it to Done"),
        "{comments:#?}"
    );
    // The repair that got it there says so.
    assert!(
        comments.last().unwrap().contains("Moved to Done."),
        "{comments:#?}"
    );
}

/// A webhook delivery about a change older than the runner's last look
/// at the board (Plane sends a failed delivery again up to ten minutes
/// later) is no news: dropped without a Plane request. A fresh one still
/// wakes the runner.
#[tokio::test(start_paused = true)]
async fn a_webhook_hint_older_than_the_last_look_is_dropped_unread() {
    let port = free_port();
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let rig = Rig::new(
        Script::Exits {
            after: secs(1),
            code: 0,
        },
        &[
            ("webhook", listen.as_str()),
            (
                "webhook",
                "secret_env = \"INFLIGHT_INPROCESS_UNUSED_SECRET\"",
            ),
        ],
    );
    let task = rig.board.add_task("Quick", "Ready for AI");
    let (store, board) = (rig.store.clone(), runtime::board_key(&rig.config));
    let hint = |item_id: &str, updated_at: std::time::SystemTime| {
        let item: plane_client::WorkItem = serde_json::from_value(serde_json::json!({
            "id": item_id,
            "name": "Quick",
            "state": {"id": "s1", "name": "Ready for AI", "group": "unstarted", "color": "#3a3a3a"},
            "labels": [],
            "created_at": "2026-12-01T00:00:00Z",
        }))
        .unwrap();
        runtime::encode_hint(&plane_client::WorkItem {
            updated_at: Some(updated_at),
            ..item
        })
    };
    let late = hint(&task, std::time::SystemTime::UNIX_EPOCH + secs(86_400));
    let sent = tokio::spawn(async move {
        // Done by then; the old news arrives.
        tokio::time::sleep(secs(30)).await;
        test_side(|| {
            store
                .add_board_hint(
                    &board,
                    &late,
                    ledger_core::Clock::now(&ledger_core::SystemClock),
                )
                .unwrap()
        });
    });
    let (summary, _) = rig.run(false, Some(secs(60))).await;
    sent.await.unwrap();
    assert_eq!(summary.dispatched, 1);
    assert_eq!(rig.board.state_of(&task), "Done");
    assert_eq!(
        rig.board.times_of(&format!("get {task}")).len(),
        1,
        "the late delivery cost a re-read: {:?}",
        rig.board.calls()
    );
}

/// systemd hears `READY=1` once the start-up sweep is done, then
/// `WATCHDOG=1` every half interval while the claim loop lives (an idle
/// wait is life); none once the loop is stuck in a store call that never
/// returns, so systemd's `WatchdogSec` restarts the runner. Real time: the
/// store hangs a blocking thread, which a paused clock would wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_then_pings_only_while_the_loop_lives() {
    let rig = Rig::new(
        Script::RunsUntilTerm,
        &[("watcher", "poll_interval_secs = 1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let read = || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = listener.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    };
    let notifier =
        runtime::Notifier::to(socket.to_str().unwrap(), Some(Duration::from_secs(1))).unwrap();
    let runner = rig.runner(false).with_notifier(notifier);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    let pings = |said: &[String]| said.iter().filter(|m| *m == "WATCHDOG=1").count();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let alive = read();
    assert_eq!(
        alive.first().map(String::as_str),
        Some("READY=1\nSTATUS=runner of role goal"),
        "{alive:?}"
    );
    assert!(pings(&alive) >= 2, "pings while idle: {alive:?}");

    // The store stops answering: the next look at the board (within the
    // 1-s poll) hangs in it, and the pings stop within the interval.
    rig.store.hang(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = read();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stuck = read();
    // Released before judging, so that a failure fails rather than hangs
    // on the stuck runner.
    rig.store.hang(false);
    assert_eq!(pings(&stuck), 0, "pinged while stuck: {stuck:?}");

    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert!(read().iter().any(|m| m == "STOPPING=1"));
}
