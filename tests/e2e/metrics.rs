//! Metrics an operator can scrape: the runner's and the watchdog's
//! `/metrics`, `watchdog metrics` and the textfile all pass `promtool
//! check metrics` (Debian's `prometheus` package), carry every metric the
//! documentation names, and move as a scripted run says they must: a
//! denial at the cap, an admission and a finish once the cap frees, a
//! reclaim of a dead runner's slot.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Every metric family, as the classic text format names it.
pub const FAMILIES: &[&str] = &[
    "inflight_admissions_total",
    "inflight_finishes_total",
    "inflight_reclaims_total",
    "inflight_slot_duration_seconds",
    "inflight_admit_duration_seconds",
    "inflight_plane_requests_total",
    "inflight_plane_rate_limited_total",
    "inflight_plane_budget_remaining",
    "inflight_lease_renewals_total",
    "inflight_store_clock_offset_seconds",
    "inflight_webhook_deliveries_total",
    "inflight_scan_duration_seconds",
    "inflight_scan_failures_total",
    "inflight_scan_suspected_misconfiguration",
    "inflight_slots_open",
    "inflight_slots_max",
    "inflight_global_slots_max",
    "inflight_oldest_open_slot_age_seconds",
    "inflight_window_starts",
    "inflight_slots_dead_owner",
    "inflight_slot_window_seconds",
    "inflight_webhook_listening",
    "inflight_webhook_silent",
    "inflight_build_info",
];

/// What `watchdog metrics` prints: what the ledger says.
pub const LEDGER_FAMILIES: &[&str] = &[
    "inflight_store_clock_offset_seconds",
    "inflight_slots_open",
    "inflight_slots_max",
    "inflight_global_slots_max",
    "inflight_oldest_open_slot_age_seconds",
    "inflight_window_starts",
    "inflight_slots_dead_owner",
    "inflight_slot_window_seconds",
    "inflight_build_info",
];

/// Starts a runner for `goal` serving its metrics on `port`.
pub fn start_runner_with_metrics(world: &mut World, port: u16) -> usize {
    world.spawn_args(
        "watcher",
        &[
            "--role",
            "goal",
            "--log-format",
            "json",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
        "runner",
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `method path` on the listener: the status and the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_with(port, method, path, None);
    (status, body)
}

/// `method path` on the listener with an `Authorization` header when
/// given: the status, the head and the body (`(0, "", "")` when nothing
/// listens yet).
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    // Not up yet: no answer.
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new(), String::new());
    };
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n{auth}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    // A chunked body (axum's default for a streamed answer) is read whole
    // here: strip the chunk sizes.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// `promtool check metrics` on `text`: its verdict and what it said.
pub fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of the sample `name{labels}` (labels as written), if any.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn check(text: &str, what: &str) {
    let (ok, said) = promtool_check(text);
    assert!(ok, "promtool check metrics on {what}: {said}\n{text}");
}

#[test]
fn metrics_pass_promtool_and_follow_a_scripted_run() {
    let mut world = World::with_executor_env(
        1,
        &[Role::new("goal", "Ready for AI")],
        &[("E2E_SLEEP_MS", "300")],
    );
    // A slot held by a live runner elsewhere fills the cap of 1.
    let held = world.sim.add_work_item("held elsewhere", "Running");
    world.slot_from_elsewhere(&held, Some(world.project()));
    let task = world.sim.add_work_item("waits for the cap", "Ready for AI");
    let (runner_port, watchdog_port) = (free_port(), free_port());
    let textfile = world.path("inflight.prom");
    let runner = start_runner_with_metrics(&mut world, runner_port);
    wait_until(Duration::from_secs(20), "a denial at the cap", || {
        let (_, body) = http(runner_port, "GET", "/metrics");
        sample(
            &body,
            "inflight_admissions_total{backend=\"local\",outcome=\"denied\",reason=\"backend_concurrency_exceeded\"}",
        )
        .is_some_and(|n| n >= 1.0)
    });
    let (_, body) = http(runner_port, "GET", "/metrics");
    assert_eq!(
        sample(&body, "inflight_slots_open{backend=\"local\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "inflight_slots_max{backend=\"local\"}"),
        Some(1.0)
    );

    // The cap frees: the task is admitted, runs and finishes.
    let out = world.watchdog(&["release", "--backend", "local", "--task", &held]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(20), "the task done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    wait_until(Duration::from_secs(10), "the finish counted", || {
        let (_, body) = http(runner_port, "GET", "/metrics");
        sample(&body, "inflight_finishes_total{reason=\"completed\"}") == Some(1.0)
    });
    let (status, runner_text) = http(runner_port, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &runner_text,
            "inflight_admissions_total{backend=\"local\",outcome=\"admitted\",reason=\"\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &runner_text,
            "inflight_slot_duration_seconds_count{backend=\"local\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&runner_text, "inflight_slots_open{backend=\"local\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &runner_text,
            "inflight_window_starts{backend=\"local\",window=\"hour\"}"
        ),
        Some(2.0),
        "the held slot's start and the task's"
    );
    assert!(sample(&runner_text, "inflight_plane_requests_total{method=\"PATCH\",endpoint=\"work-items/{id}\",status=\"200\"}").is_some_and(|n| n >= 2.0));
    assert!(
        sample(&runner_text, "inflight_admit_duration_seconds_count").is_some_and(|n| n >= 2.0)
    );

    // A dead runner's slot, reclaimed by the watchdog.
    let orphan = world.sim.add_work_item("left by a dead runner", "Running");
    world.slot_of_a_dead_runner(&orphan);
    let watchdog = world.spawn_args(
        "watchdog",
        &[
            "--log-format",
            "json",
            "run",
            "--interval",
            "1",
            "--apply",
            "--metrics-addr",
            &format!("127.0.0.1:{watchdog_port}"),
            "--textfile",
            textfile.to_str().unwrap(),
        ],
        "watchdog",
    );
    wait_until(Duration::from_secs(20), "the reclaim counted", || {
        let (_, body) = http(watchdog_port, "GET", "/metrics");
        sample(&body, "inflight_reclaims_total{rule=\"DEAD_OWNER_CLEAR\"}") == Some(1.0)
    });
    let (_, watchdog_text) = http(watchdog_port, "GET", "/metrics");
    assert!(
        sample(&watchdog_text, "inflight_scan_duration_seconds_count").is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        sample(&watchdog_text, "inflight_scan_failures_total"),
        Some(0.0)
    );

    // Requeued by the watchdog, the orphan is run by the runner; then a
    // slot held elsewhere stays open while the two views are compared.
    wait_until(Duration::from_secs(20), "the orphan run again", || {
        world.sim.state_of(&orphan).as_deref() == Some("Done")
    });
    let elsewhere = world.sim.add_work_item("held elsewhere again", "Running");
    world.slot_from_elsewhere(&elsewhere, Some(world.project()));

    // Every family, in all three outputs, and promtool takes each.
    let once = world.watchdog(&["metrics"]);
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let once = String::from_utf8(once.stdout).unwrap();
    // Rewritten every scan interval: soon it has what the scans did.
    wait_until(Duration::from_secs(10), "the textfile", || {
        std::fs::read_to_string(&textfile).is_ok_and(|t| {
            sample(&t, "inflight_reclaims_total{rule=\"DEAD_OWNER_CLEAR\"}") == Some(1.0)
        })
    });
    let file = std::fs::read_to_string(&textfile).unwrap();
    for (what, text, families) in [
        ("the runner's /metrics", &runner_text, FAMILIES),
        ("the watchdog's /metrics", &watchdog_text, FAMILIES),
        ("the textfile", &file, FAMILIES),
        ("watchdog metrics", &once, LEDGER_FAMILIES),
    ] {
        check(text, what);
        for family in families {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{what} lacks {family}:\n{text}"
            );
        }
    }
    // `watchdog metrics` agrees with `watchdog status` on what is open.
    let status = world.watchdog_json(&["status", "--json"]);
    let open = status["slots"].as_array().unwrap().len() as f64;
    assert_eq!(
        sample(&once, "inflight_slots_open{backend=\"local\"}"),
        Some(open)
    );

    // The listener serves GET /metrics and nothing else.
    assert_eq!(http(runner_port, "POST", "/metrics").0, 405);
    assert_eq!(http(runner_port, "GET", "/").0, 404);
    assert_eq!(http(watchdog_port, "GET", "/metrics/../status").0, 404);
    assert_eq!(http(watchdog_port, "DELETE", "/metrics").0, 405);
    for index in [runner, watchdog] {
        world.signal(index, libc::SIGTERM);
        assert!(
            world
                .wait(index, Duration::from_secs(15))
                .is_some_and(|s| s.success())
        );
    }
}
