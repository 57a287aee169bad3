//! Plane's webhooks, received by `watchdog run` (`[webhook]`), wake the
//! runners: a task moved into a claim state starts long before the next
//! poll (300 s here). And what is not a good delivery is refused without
//! harm: a bad or missing signature (401), a body over the cap (413), a
//! signed body that is not a delivery (400), another project's event
//! (200, used for nothing), a recorded real delivery replayed again and
//! again (one execution in all).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ledger_core::FleetStore;
use serde_json::Value;

use crate::support::*;

/// POSTs `body` with `headers` to the listener; the answer's status.
fn post(port: u16, method: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut head = format!(
        "{method} /plane-webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A refusal may come before the whole body is read; that is fine.
    let _ = stream.write_all(body);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The current time as RFC 3339 in UTC, as Plane writes `updated_at`.
fn rfc3339_now() -> String {
    ledger_core::Timestamp::from_system_time(std::time::SystemTime::now()).to_string()
}

fn wait_for_log(world: &World, tag: &str, needle: &str) {
    wait_until(Duration::from_secs(20), needle, || {
        world.log(tag).contains(needle)
    });
}

fn hints(world: &World) -> usize {
    let config = runtime::Config::load(&world.config).unwrap();
    world
        .ledger()
        .board_hints_after(&runtime::board_key(&config), 0)
        .unwrap()
        .hints
        .len()
}

#[test]
fn a_webhook_starts_a_task_long_before_the_next_poll() {
    let secret = "plane_wh_0123456789abcdef0123456789abcdef";
    let mut world = World::new(1, &[Role::new("goal", "Ready for AI")]);
    let port = world.receive_webhooks(secret);
    world
        .sim
        .add_webhook(&format!("http://127.0.0.1:{port}/plane-webhook"), secret);
    let task = world.sim.add_work_item("Waits in the backlog", "Backlog");
    world.start_watchdog("watchdog");
    world.start_runner("goal", "runner");
    wait_for_log(&world, "watchdog", "receiving Plane's webhooks");
    wait_for_log(&world, "runner", "claiming");
    // Its first look is done, and found nothing: it now waits 300 s.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(world.executor_pids(&task).is_empty());

    let moved = Instant::now();
    assert!(world.sim.set_state(&task, "Ready for AI"));
    wait_until(Duration::from_secs(20), "the task to be done", || {
        world.sim.state_of(&task).as_deref() == Some("Done")
    });
    let took = moved.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "only the webhook can have woken it ({took:?})"
    );
    let deliveries = world.sim.deliveries();
    assert!(!deliveries.is_empty());
    assert_eq!(deliveries[0].status, 200, "{deliveries:?}");
    assert!(world.log("watchdog").contains("runners woken"));
    assert_eq!(world.executor_pids(&task).len(), 1);
}

#[test]
fn bad_deliveries_are_refused_and_a_replayed_one_runs_its_task_once() {
    let recorded: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/plane-client/tests/fixtures/webhook-issue-state-change.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let secret = recorded["webhook"]["secret_key"].as_str().unwrap();
    let delivery = &recorded["deliveries"][0];
    // The recorded bytes, but for the change's time: now, as a delivery of
    // a change made now says (a runner drops news older than its last look
    // at the board), signed again with the recorded secret.
    let recorded_at = delivery["body"]["data"]["updated_at"].as_str().unwrap();
    let now = rfc3339_now();
    let raw = delivery["raw_body"]
        .as_str()
        .unwrap()
        .replace(recorded_at, &now)
        .into_bytes();
    let raw = raw.as_slice();
    let signature = &plane_sim::sign(secret, raw);
    let data = &delivery["body"]["data"];
    let (project, item) = (
        data["project"].as_str().unwrap(),
        data["id"].as_str().unwrap(),
    );

    // The recorded project and work item, claimed from the state the
    // recorded change moved it into.
    let mut world = World::for_project(1, &[Role::new("goal", "Testing")], project);
    let port = world.receive_webhooks(secret);
    world.sim.add_work_item_with(plane_sim::ItemSeed {
        id: Some(item.to_owned()),
        name: "s19-z sleep=1".into(),
        state: Some("Backlog".into()),
        ..Default::default()
    });
    let watchdog = world.start_watchdog("watchdog");
    let runner = world.start_runner("goal", "runner");
    wait_for_log(&world, "watchdog", "receiving Plane's webhooks");
    wait_for_log(&world, "runner", "claiming");
    std::thread::sleep(Duration::from_millis(1500));
    // Moved as the recording's PATCH moved it; the simulator has no
    // webhook registered, so the recorded delivery is the only news.
    assert!(world.sim.set_state(item, "Testing"));

    let id = |n: usize| format!("e2e-delivery-{n}");
    let signed = |body: &[u8]| plane_sim::sign(secret, body);
    let mut wrong = signature.to_owned().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let other_project =
        String::from_utf8_lossy(raw).replace(project, "00000000-0000-4000-8000-000000000000");
    let oversized = vec![b' '; 70_000];
    let garbage = b"{\"event\": \"issue\", \"action\": ";
    // What is sent, and the status it must get.
    type Case = (&'static str, u16, String, Vec<(String, String)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "a wrong signature",
            401,
            "POST".into(),
            vec![("X-Plane-Signature".into(), wrong)],
            raw.to_vec(),
        ),
        ("no signature", 401, "POST".into(), vec![], raw.to_vec()),
        (
            "a body over the cap",
            413,
            "POST".into(),
            vec![("X-Plane-Signature".into(), signed(&oversized))],
            oversized.clone(),
        ),
        (
            "signed garbage",
            400,
            "POST".into(),
            vec![("X-Plane-Signature".into(), signed(garbage))],
            garbage.to_vec(),
        ),
        (
            "another project's event",
            200,
            "POST".into(),
            vec![("X-Plane-Signature".into(), signed(other_project.as_bytes()))],
            other_project.clone().into_bytes(),
        ),
        ("a GET", 405, "GET".into(), vec![], Vec::new()),
    ];
    for (what, expected, method, headers, body) in &cases {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(post(port, method, &headers, body), *expected, "{what}");
    }
    assert_eq!(
        hints(&world),
        0,
        "no refused or foreign delivery becomes a hint"
    );

    // The recorded delivery, replayed ten times as recorded, then ten
    // times under new delivery ids (its signature covers only the body).
    for n in 0..20 {
        let delivery_id = if n < 10 {
            delivery["headers"]["X-Plane-Delivery"]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            id(n)
        };
        let status = post(
            port,
            "POST",
            &[
                ("X-Plane-Signature", signature),
                ("X-Plane-Delivery", &delivery_id),
            ],
            raw,
        );
        assert_eq!(status, 200, "replay {n}");
        if n == 0 {
            wait_until(Duration::from_secs(20), "the task to be done", || {
                world.sim.state_of(item).as_deref() == Some("Done")
            });
        }
    }
    assert_eq!(hints(&world), 11, "a repeated delivery id is ignored");
    // The runner looks at each hint, finds the task done, and runs nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(world.executor_pids(item).len(), 1, "one execution in all");
    assert_eq!(world.sim.state_of(item).as_deref(), Some("Done"));
    assert!(
        world.wait(watchdog, Duration::ZERO).is_none(),
        "the watchdog is still up"
    );
    assert!(
        world.wait(runner, Duration::ZERO).is_none(),
        "the runner is still up"
    );
    let log = world.log("watchdog");
    for refusal in [
        "refused a webhook delivery\"",
        "refused a webhook delivery over the size cap",
        "refused a signed webhook delivery that is not one",
    ] {
        assert!(log.contains(refusal), "{refusal}: {log}");
    }
    assert!(!log.contains(secret), "the secret never reaches a log");
}

#[test]
fn a_webhook_secret_that_is_not_set_stops_watchdog_run_with_status_2_naming_it() {
    let world = World::new(1, &[Role::new("goal", "Ready for AI")]);
    world.receive_webhooks("unused");
    // The variable is named in the file but absent from the environment.
    world.edit_config("E2E_WEBHOOK_SECRET", "E2E_WEBHOOK_SECRET_UNSET");
    let out = world.watchdog(&["run", "--interval", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("webhook.secret_env") && said.contains("E2E_WEBHOOK_SECRET_UNSET"),
        "{said}"
    );
}

/// The receiver goes away for a while (a deploy of `watchdog run`), Plane
/// gives up on the webhook (five failed deliveries in a row; here its
/// retries come within 0.3 s instead of 10 minutes) and sets it inactive.
/// Deliveries stop for good. The runner notices at its next look at the
/// board (a task entered the claim state and no delivery named it) and
/// polls at `silent_poll_secs` from then on; the watchdog's log and
/// `inflight_webhook_silent` say so. Enabled again in Plane, the next
/// delivery puts both back.
#[test]
fn webhooks_plane_set_inactive_put_the_runners_back_on_the_normal_poll() {
    let secret = "plane_wh_0123456789abcdef0123456789abcdef";
    let mut world = World::new(1, &[Role::new("goal", "Ready for AI")]);
    let port = world.receive_webhooks(secret);
    // A 20-s webhook poll, a 1-s one while deliveries are missed.
    world.edit_config("poll_interval_secs = 300", "poll_interval_secs = 20");
    world.configure("webhook", "silent_poll_secs = 1");
    world
        .sim
        .set_webhook_retry_within(Duration::from_millis(300));
    let hook = world
        .sim
        .add_webhook(&format!("http://127.0.0.1:{port}/plane-webhook"), secret);
    let metrics = crate::metrics::free_port();
    let watchdog_args = [
        "--log-format",
        "json",
        "run",
        "--interval",
        "1",
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
    ];
    let watchdog = world.spawn_args("watchdog", &watchdog_args, "watchdog");
    world.start_runner("goal", "runner");
    wait_for_log(&world, "watchdog", "receiving Plane's webhooks");
    wait_for_log(&world, "runner", "claiming");
    std::thread::sleep(Duration::from_millis(1500));

    // The receiver is down; five changes, five failed deliveries (each
    // retried), and Plane sets the webhook inactive.
    world.signal(watchdog, libc::SIGTERM);
    assert!(world.wait(watchdog, Duration::from_secs(10)).is_some());
    for i in 0..5 {
        let other = world
            .sim
            .add_work_item(&format!("elsewhere {i}"), "Backlog");
        world.sim.set_state(&other, "Cancelled");
    }
    wait_until(
        Duration::from_secs(20),
        "Plane to set the webhook inactive",
        || !world.sim.webhook_active(&hook),
    );
    // The receiver is back; nothing is sent to it any more.
    world.spawn_args("watchdog", &watchdog_args, "watchdog-2");
    wait_for_log(&world, "watchdog-2", "receiving Plane's webhooks");

    // A task entered the claim state: no delivery. The runner finds it
    // at its next look (within the 20-s poll) and runs it, and notices.
    let first = world.sim.add_work_item("unannounced", "Backlog");
    world.sim.set_state(&first, "Ready for AI");
    wait_until(Duration::from_secs(30), "the unannounced task done", || {
        world.sim.state_of(&first).as_deref() == Some("Done")
    });
    wait_for_log(&world, "runner", "webhook deliveries are missing");
    // Back on the normal poll: the next task starts within a few seconds,
    // not at the next 20-s poll.
    let second = world.sim.add_work_item("also unannounced", "Backlog");
    let moved = Instant::now();
    world.sim.set_state(&second, "Ready for AI");
    wait_until(Duration::from_secs(30), "the second task started", || {
        !world.executor_pids(&second).is_empty()
    });
    let took = moved.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "picked up after {took:?}: not on the 1-s poll"
    );
    // The watchdog says so, in its log and its metrics.
    wait_for_log(&world, "watchdog-2", "webhook deliveries are missing");
    let silent = || {
        let (_, body) = crate::metrics::http(metrics, "GET", "/metrics");
        crate::metrics::sample(&body, "inflight_webhook_silent")
    };
    assert_eq!(silent(), Some(1.0));

    // Enabled again in Plane: the next change is delivered, and both go
    // back to the webhook's pace.
    world.sim.enable_webhook(&hook);
    let third = world.sim.add_work_item("announced", "Backlog");
    world.sim.set_state(&third, "Ready for AI");
    wait_for_log(&world, "runner", "webhook deliveries arrive again");
    wait_for_log(&world, "watchdog-2", "webhook deliveries arrive again");
    wait_until(Duration::from_secs(10), "the gauge back at 0", || {
        silent() == Some(0.0)
    });
}
