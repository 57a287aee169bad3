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
    let times: Vec<Duration> = log.iter().map(|r| r.at).collect();
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < *start + WINDOW)
                .count()
        })
        .max()
        .unwrap();
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
