//! Pacing: with the simulator limiting the key to 60 requests a window, a
//! burst of 100 lookups never meets a 429, and the simulator never counts
//! more than 60 within any window. The window is scaled down from Plane's
//! minute to two seconds.

use std::sync::Arc;
use std::time::Duration;

use plane_client::*;
use plane_sim::{PlaneSim, SimConfig};

use crate::support::*;

const LIMIT: u32 = 60;
const WINDOW: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_lookups_stays_under_the_limit_without_a_429() {
    let sim = PlaneSim::start(SimConfig {
        rate_limit: Some((LIMIT, WINDOW)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ids: Vec<String> = (0..100)
        .map(|i| sim.add_work_item(&format!("t{i}"), "Todo"))
        .collect();
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.routes = RouteFamily::WorkItems;
    config.rate_limit = RateLimit {
        requests: LIMIT,
        per: WINDOW,
    };
    config.call_deadline = Duration::from_secs(30);
    let plane = Arc::new(PlaneClient::new(config).unwrap());

    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let plane = plane.clone();
            let id = id.clone();
            tokio::spawn(async move { plane.get_work_item(&id).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("no error reaches the caller");
    }

    let log = sim.requests();
    assert_eq!(log.len(), 100, "no retries were needed");
    assert!(log.iter().all(|r| r.status == 200), "a request was refused");
    // The busiest window of the simulator's own clock.
    let busiest = sim.busiest_window(WINDOW);
    assert!(
        busiest <= LIMIT as usize,
        "{busiest} requests within one window"
    );
    assert!(
        busiest >= LIMIT as usize / 2,
        "the burst was not a burst: {busiest}"
    );
}

#[tokio::test]
async fn the_servers_remaining_count_paces_a_key_shared_with_others() {
    // Another process has used up most of the shared budget: the client
    // learns it from X-RateLimit-Remaining and waits instead of hitting 429.
    let sim = PlaneSim::start(SimConfig {
        rate_limit: Some((5, WINDOW)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let task = sim.add_work_item("t", "Todo");
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.routes = RouteFamily::WorkItems;
    config.call_deadline = Duration::from_secs(30);
    let other = PlaneClient::new(config.clone()).unwrap();
    for _ in 0..4 {
        other.get_work_item(&task).await.unwrap();
    }
    let plane = PlaneClient::new(config).unwrap();
    for _ in 0..3 {
        plane.get_work_item(&task).await.unwrap();
    }
    let refused = sim.requests().iter().filter(|r| r.status == 429).count();
    assert!(refused <= 1, "{refused} requests refused");
}

/// Three runners share one key with Plane's real limit (60 a minute,
/// `X-RateLimit-Reset` always now + 60), each allowed a third of it. None
/// ever exceeds its own budget, the server never refuses one, and once a
/// runner's budget is used up it waits until its oldest send leaves the
/// window (plus the pacer's small margin for latency): never until the
/// server's reset, never longer than the window requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_on_one_key_keep_their_budgets_and_wait_no_longer_than_needed() {
    const MINUTE: Duration = Duration::from_secs(60);
    const BUDGET: usize = 20;
    let sim = PlaneSim::start(SimConfig {
        rate_limit: Some((60, MINUTE)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let runners: Vec<(String, Arc<PlaneClient>)> = (0..3)
        .map(|i| {
            let mut config = quick_config(
                &sim.base_url(),
                &sim.project_id(),
                plane_sim::DEFAULT_API_KEY,
            );
            config.routes = RouteFamily::WorkItems;
            config.rate_limit = RateLimit {
                requests: BUDGET as u32,
                per: MINUTE,
            };
            config.call_deadline = Duration::from_secs(120);
            (
                sim.add_work_item(&format!("runner {i}'s task"), "Todo"),
                Arc::new(PlaneClient::new(config).unwrap()),
            )
        })
        .collect();
    let handles: Vec<_> = runners
        .iter()
        .map(|(task, plane)| {
            let (task, plane) = (task.clone(), plane.clone());
            tokio::spawn(async move {
                for _ in 0..BUDGET + 2 {
                    plane.get_work_item(&task).await.unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }

    let log = sim.requests();
    assert!(
        log.iter().all(|r| r.status == 200),
        "the server refused a request"
    );
    let margin = MINUTE / 50;
    for (task, _) in &runners {
        let sent: Vec<Duration> = log
            .iter()
            .filter(|r| r.path.contains(task.as_str()))
            .map(|r| r.at)
            .collect();
        assert_eq!(sent.len(), BUDGET + 2);
        for (i, start) in sent.iter().enumerate() {
            let within = sent[i..].iter().filter(|t| **t < *start + MINUTE).count();
            assert!(
                within <= BUDGET,
                "{within} sends within a minute of send {i}"
            );
        }
        // The first send over budget waited for the oldest to leave the
        // window: at least a minute after it, and no more than the margin
        // and a little scheduling later.
        let waited_for = sent[BUDGET] - sent[0];
        eprintln!(
            "runner's task {task}: send {} went {waited_for:?} after its first",
            BUDGET + 1
        );
        assert!(waited_for >= MINUTE, "{waited_for:?}");
        assert!(
            waited_for <= MINUTE + margin + Duration::from_secs(2),
            "waited {waited_for:?} for a slot that freed after {MINUTE:?}"
        );
    }
}
