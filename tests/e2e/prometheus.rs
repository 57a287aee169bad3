//! A real Prometheus (Debian's package), started on loopback, scrapes a
//! running runner and watchdog; its query API says what `watchdog status
//! --json` says about the open slots.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::metrics::{free_port, http, start_runner_with_metrics};
use crate::support::*;

/// The query's result vector.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http(port, "GET", &format!("/api/v1/query?query={encoded}"));
    if status != 200 {
        return Vec::new();
    }
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_a_runner_and_the_watchdog_and_agrees_with_status() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    // Two slots held by a runner elsewhere: open the whole test.
    for name in ["held one", "held two"] {
        let task = world.sim.add_work_item(name, "Running");
        world.slot_from_elsewhere(&task, Some(world.project()));
    }
    let (runner_port, watchdog_port, prometheus_port) = (free_port(), free_port(), free_port());
    let runner = start_runner_with_metrics(&mut world, runner_port);
    let watchdog = world.spawn_args(
        "watchdog",
        &[
            "--log-format",
            "json",
            "run",
            "--interval",
            "1",
            "--metrics-addr",
            &format!("127.0.0.1:{watchdog_port}"),
        ],
        "watchdog",
    );
    let config = world.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: inflight\n    static_configs:\n      - targets: ['127.0.0.1:{runner_port}', '127.0.0.1:{watchdog_port}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            world.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(world.path("logs/prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian's prometheus package; .ci/run installs it)");

    wait_until(Duration::from_secs(60), "both targets up", || {
        let up = query(prometheus_port, "up{job=\"inflight\"}");
        up.len() == 2 && up.iter().all(|s| value(s) == 1.0)
    });
    wait_until(
        Duration::from_secs(30),
        "inflight_slots_open from both",
        || query(prometheus_port, "inflight_slots_open{backend=\"local\"}").len() == 2,
    );
    let status = world.watchdog_json(&["status", "--json"]);
    let open = status["slots"].as_array().unwrap().len() as f64;
    assert_eq!(open, 2.0, "{status}");
    let scraped = query(prometheus_port, "inflight_slots_open{backend=\"local\"}");
    for sample in &scraped {
        assert_eq!(value(sample), open, "{sample}");
    }
    // The runner's own counters arrive too, labelled by instance.
    let renewals = query(
        prometheus_port,
        "inflight_lease_renewals_total{outcome=\"ok\"}",
    );
    assert!(
        renewals
            .iter()
            .any(|s| s["metric"]["instance"] == format!("127.0.0.1:{runner_port}")),
        "{renewals:?}"
    );

    let _ = prometheus.kill();
    let _ = prometheus.wait();
    for index in [runner, watchdog] {
        world.signal(index, libc::SIGTERM);
        assert!(
            world
                .wait(index, Duration::from_secs(15))
                .is_some_and(|s| s.success())
        );
    }
}
