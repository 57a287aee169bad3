//! Every call and every failure mode over real loopback HTTP against the
//! simulator.

use std::time::{Duration, Instant};

use plane_client::*;
use plane_sim::{Fault, FaultRule};

use crate::support::*;

#[tokio::test]
async fn get_list_states_labels_project_patch_and_comment() {
    let sim = sim().await;
    let ids: Vec<String> = (0..7)
        .map(|i| sim.add_work_item(&format!("task {i}"), "Todo"))
        .collect();
    let labelled = sim.add_work_item_with(plane_sim::ItemSeed {
        name: "labelled".into(),
        state: Some("Todo".into()),
        labels: vec!["task-kind: goal".into()],
        ..Default::default()
    });
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.page_size = 3;
    let plane = PlaneClient::new(config).unwrap();

    let item = plane.get_work_item(&ids[0]).await.unwrap();
    assert_eq!(item.name, "task 0");
    assert!(matches!(&item.state, StateRef::Expanded(s) if s.name == "Todo"));

    sim.clear_requests();
    let all = plane.list_work_items().await.unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(all[0].id, labelled, "newest first");
    let pages = sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/work-items/"))
        .count();
    assert_eq!(pages, 3, "8 items in pages of 3");

    let states = plane.states().await.unwrap();
    assert_eq!(
        states.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["Backlog", "Todo", "In Progress", "Done", "Cancelled"]
    );
    let labels = plane.labels().await.unwrap();
    assert_eq!(labels[0].name, "task-kind: goal");
    assert_eq!(all[0].labels[0].id(), labels[0].id);
    assert_eq!(plane.get_project().await.unwrap().identifier, "ROCK");

    sim.clear_requests();
    let patched = plane.set_state(&ids[1], "in progress").await.unwrap();
    assert_eq!(patched.state.id(), states[2].id);
    assert_eq!(sim.state_of(&ids[1]).as_deref(), Some("In Progress"));
    plane
        .post_comment(&ids[1], "<p>picked up</p>")
        .await
        .unwrap();
    assert_eq!(sim.comments(&ids[1]), ["<p>picked up</p>"]);
    assert_eq!(
        plane.list_comments(&ids[1]).await.unwrap()[0].comment_html,
        "<p>picked up</p>"
    );
    // States were cached: the PATCH and the comment cost one request each.
    assert_eq!(sim.requests().len(), 3);

    match plane.set_state(&ids[1], "Nonexistent").await {
        Err(PlaneError::UnknownState { available, .. }) => {
            assert!(available.contains("In Progress"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn not_found_is_told_apart_from_a_route_miss() {
    let sim = sim().await;
    let plane = client_for(&sim);
    let deleted = sim.add_work_item("doomed", "Todo");
    sim.delete_work_item(&deleted);
    assert!(matches!(
        plane.get_work_item(&deleted).await,
        Err(PlaneError::NotFound { .. })
    ));
    let archived = sim.add_work_item("old", "Done");
    sim.archive_work_item(&archived);
    assert!(matches!(
        plane.get_work_item(&archived).await,
        Err(PlaneError::NotFound { .. })
    ));
    assert!(matches!(
        plane.get_work_item("not-a-uuid").await,
        Err(PlaneError::RouteNotFound { .. })
    ));

    let mut wrong_base = quick_config(
        &format!("{}/plane", sim.base_url()),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    wrong_base.routes = RouteFamily::WorkItems;
    let plane = PlaneClient::new(wrong_base).unwrap();
    assert!(matches!(
        plane.get_work_item(&deleted).await,
        Err(PlaneError::RouteNotFound { .. })
    ));
}

#[tokio::test]
async fn a_work_item_is_found_by_the_identifier_people_use() {
    let sim = sim().await;
    let plane = client_for(&sim);
    sim.add_work_item("first", "Todo");
    let second = sim.add_work_item("second", "In Progress");
    let item = plane.get_work_item_by_identifier("ROCK-2").await.unwrap();
    assert_eq!(
        (item.id.as_str(), item.name.as_str()),
        (second.as_str(), "second")
    );
    assert_eq!(item.sequence_id, Some(2));
    assert!(matches!(&item.state, StateRef::Expanded(s) if s.name == "In Progress"));
    assert!(matches!(
        plane.get_work_item_by_identifier("ROCK-999").await,
        Err(PlaneError::NotFound { .. })
    ));
    sim.clear_requests();
    for bad in ["ROCK", "ROCK-", "-2", "ROCK-2x", "RO CK-2", "../ROCK-2"] {
        match plane.get_work_item_by_identifier(bad).await {
            Err(PlaneError::InvalidIdentifier { identifier }) => assert_eq!(identifier, bad),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(
        sim.requests().is_empty(),
        "a malformed identifier asks nothing"
    );
}

#[tokio::test]
async fn missing_and_bad_keys_and_wrong_projects_are_typed() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let bad_key = PlaneClient::new(quick_config(
        &sim.base_url(),
        &sim.project_id(),
        "plane_api_wrong",
    ))
    .unwrap();
    assert!(matches!(
        bad_key.get_work_item(&task).await,
        Err(PlaneError::Forbidden { .. })
    ));
    let no_key = PlaneClient::new(quick_config(&sim.base_url(), &sim.project_id(), "")).unwrap();
    assert!(matches!(
        no_key.get_work_item(&task).await,
        Err(PlaneError::Unauthorized { .. })
    ));
    let wrong_project = PlaneClient::new(quick_config(
        &sim.base_url(),
        "00000000-0000-4000-8000-000000000000",
        plane_sim::DEFAULT_API_KEY,
    ))
    .unwrap();
    match wrong_project.get_work_item(&task).await {
        Err(PlaneError::Forbidden { detail, .. }) => assert!(detail.contains("permission")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wrong_project.get_project().await,
        Err(PlaneError::NotFound { .. })
    ));
    // None of these is retried: one request each (the route-family probe
    // that precedes a first work-item call fails in its stead).
    let attempts = sim.requests().len();
    assert_eq!(attempts, 4, "{:?}", sim.requests());
}

#[tokio::test]
async fn a_429_is_honoured_for_as_long_as_retry_after_says() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let plane = client_for(&sim);
    plane.get_work_item(&task).await.unwrap();
    sim.inject(
        FaultRule::new(Fault::RateLimited {
            retry_after_secs: 1,
        })
        .times(1),
    );
    let started = Instant::now();
    plane.get_work_item(&task).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_are_bounded() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.routes = RouteFamily::WorkItems;
    config.max_attempts = 3;
    config.call_deadline = Duration::from_secs(30);
    let plane = PlaneClient::new(config).unwrap();
    sim.inject(FaultRule::new(Fault::RateLimited {
        retry_after_secs: 0,
    }));
    match plane.get_work_item(&task).await {
        Err(PlaneError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::ZERO))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.requests().len(), 3);

    sim.clear_faults();
    sim.clear_requests();
    sim.inject(FaultRule::new(Fault::Status(503)));
    assert!(matches!(
        plane.get_work_item(&task).await,
        Err(PlaneError::Server { status: 503, .. })
    ));
    assert_eq!(sim.requests().len(), 3);
}

#[tokio::test]
async fn a_503_then_success_succeeds() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let plane = client_for(&sim);
    plane.get_work_item(&task).await.unwrap();
    sim.inject(FaultRule::new(Fault::Status(503)).times(2));
    sim.clear_requests();
    assert_eq!(plane.get_work_item(&task).await.unwrap().name, "t");
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test]
async fn a_500_and_a_post_are_not_blindly_retried() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let plane = client_for(&sim);
    plane.get_work_item(&task).await.unwrap();
    sim.clear_requests();
    sim.inject(FaultRule::new(Fault::Status(500)).times(1));
    assert!(matches!(
        plane.get_work_item(&task).await,
        Err(PlaneError::Server { status: 500, .. })
    ));
    sim.inject(
        FaultRule::new(Fault::Status(502))
            .on_method("POST")
            .times(1),
    );
    assert!(matches!(
        plane.post_comment(&task, "<p>x</p>").await,
        Err(PlaneError::Server { status: 502, .. })
    ));
    assert_eq!(sim.requests().len(), 2);
    assert!(sim.comments(&task).is_empty(), "no duplicate comment");
}

#[tokio::test]
async fn a_hung_request_times_out() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.routes = RouteFamily::WorkItems;
    config.request_timeout = Duration::from_millis(300);
    config.max_attempts = 2;
    let plane = PlaneClient::new(config).unwrap();
    sim.inject(FaultRule::new(Fault::Hang));
    let started = Instant::now();
    assert!(matches!(
        plane.get_work_item(&task).await,
        Err(PlaneError::Timeout { .. })
    ));
    // The server hangs for an hour; a generous bound tells giving up from
    // waiting for it without depending on how loaded the machine is.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn a_slow_body_and_a_reset_connection_are_survived_or_reported() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let plane = client_for(&sim);
    plane.get_work_item(&task).await.unwrap();
    sim.inject(FaultRule::new(Fault::SlowBody(Duration::from_millis(2))).times(1));
    assert_eq!(plane.get_work_item(&task).await.unwrap().name, "t");
    sim.inject(FaultRule::new(Fault::ConnectionReset).times(1));
    // The GET is retried after the broken body.
    assert_eq!(plane.get_work_item(&task).await.unwrap().name, "t");
    sim.inject(FaultRule::new(Fault::ConnectionReset));
    assert!(matches!(
        plane.get_work_item(&task).await,
        Err(PlaneError::Transport { .. })
    ));
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_with_an_excerpt() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let plane = client_for(&sim);
    plane.get_work_item(&task).await.unwrap();
    sim.inject(FaultRule::new(Fault::Malformed).times(1));
    match plane.get_work_item(&task).await {
        Err(PlaneError::Decode { excerpt, .. }) => {
            assert!(excerpt.starts_with(r#"{"id": "16aa1bb4""#), "{excerpt}")
        }
        other => panic!("{other:?}"),
    }
    sim.inject(FaultRule::new(Fault::Status(502)));
    // An HTML error page from a proxy is a server error, not a decode error.
    assert!(matches!(
        plane.get_work_item(&task).await,
        Err(PlaneError::Server { status: 502, .. })
    ));
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_being_read_whole() {
    let sim = sim().await;
    let task = sim.add_work_item("t", "Todo");
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.max_response_bytes = 1024 * 1024;
    let plane = PlaneClient::new(config).unwrap();
    plane.get_work_item(&task).await.unwrap();
    // 64 GiB, generated as it is sent: reading it whole would take many
    // minutes here, so a generous bound tells refusing early from reading
    // it all without depending on how loaded the machine is.
    sim.inject(FaultRule::new(Fault::Oversized(64 * 1024 * 1024 * 1024)));
    let started = Instant::now();
    match plane.get_work_item(&task).await {
        Err(PlaneError::TooLarge { limit, .. }) => assert_eq!(limit, 1024 * 1024),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_old_server_is_spoken_to_through_issues_routes() {
    let sim = sim().await;
    sim.set_old_server(true);
    let task = sim.add_work_item("legacy", "Todo");
    let plane = client_for(&sim);
    assert_eq!(plane.get_work_item(&task).await.unwrap().name, "legacy");
    plane.set_state(&task, "Done").await.unwrap();
    plane.post_comment(&task, "<p>done</p>").await.unwrap();
    let paths: Vec<String> = sim
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.status, r.path))
        .collect();
    // One probe on /work-items/ answers "Page not found.", then /issues/ for
    // everything.
    assert!(
        paths[0].starts_with("404 ") && paths[0].ends_with("/work-items/"),
        "{paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| p.contains("/work-items/")).count(),
        1,
        "{paths:?}"
    );
    assert!(paths[1..].iter().all(|p| p.starts_with("20")), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| p.contains("/issues/") && p.ends_with("/comments/"))
    );
}

#[tokio::test]
async fn a_connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = quick_config(&format!("http://{addr}"), PROJECT, "k");
    config.max_attempts = 2;
    let plane = PlaneClient::new(config).unwrap();
    assert!(matches!(
        plane.probe_project().await,
        Err(PlaneError::Transport { .. })
    ));
}

/// A gateway in front of Plane that answers a JSON 404 of its own is not
/// Plane saying the task is gone.
#[tokio::test]
async fn a_gateway_s_json_404_is_not_a_deleted_task() {
    let sim = sim().await;
    let plane = client_for(&sim);
    let task = sim.add_work_item("alive", "Todo");
    plane.probe_project().await.unwrap();
    sim.inject(FaultRule::new(Fault::Json {
        status: 404,
        body: r#"{"error": "Not found"}"#.into(),
    }));
    assert!(matches!(
        plane.get_work_item(&task).await,
        Err(PlaneError::RouteNotFound { .. })
    ));
}

/// With auto-detection, a base URL under which neither route family exists
/// is reported as such, not as an old server.
#[tokio::test]
async fn a_wrong_base_path_is_named_as_such() {
    let sim = sim().await;
    let config = quick_config(
        &format!("{}/api/v1", sim.base_url()),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    let plane = PlaneClient::new(config).unwrap();
    let error = plane.probe_project().await.unwrap_err();
    assert!(matches!(error, PlaneError::NoPlaneApi { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("plane.base_url") && !text.contains("older"),
        "{text}"
    );
}

/// A state deleted and re-created under the same name gets a new id; the
/// PATCH to the cached id is refused with 400, and the client reloads the
/// states once and sends the new id.
#[tokio::test]
async fn a_re_created_state_is_found_under_its_new_id() {
    let sim = sim().await;
    let plane = client_for(&sim);
    let old = sim.add_state("Review", "started");
    let task = sim.add_work_item("t", "Todo");
    plane.set_state(&task, "Review").await.unwrap();
    plane.set_state(&task, "Todo").await.unwrap();
    sim.delete_state("Review").unwrap();
    let new = sim.add_state("Review", "started");
    assert_ne!(old, new);
    sim.clear_requests();
    let patched = plane.set_state(&task, "Review").await.unwrap();
    assert_eq!(patched.state.id(), new);
    let statuses: Vec<(String, u16)> = sim
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("PATCH".to_owned(), 400),
            ("GET".to_owned(), 200),
            ("PATCH".to_owned(), 200)
        ]
    );
    // A state that is gone for good is named, with the states there are.
    sim.set_state(&task, "Todo");
    sim.delete_state("Review").unwrap();
    match plane.set_state(&task, "Review").await {
        Err(PlaneError::UnknownState { name, available }) => {
            assert_eq!(name, "Review");
            assert!(available.contains("Todo"), "{available}");
        }
        other => panic!("{other:?}"),
    }
}

/// States and labels are listed again once they are older than the cache's
/// time to live: a label created after the first look is seen.
#[tokio::test]
async fn cached_states_and_labels_expire() {
    let sim = sim().await;
    let mut config = quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    );
    config.cache_ttl = Duration::from_millis(300);
    let plane = PlaneClient::new(config).unwrap();
    assert!(plane.labels().await.unwrap().is_empty());
    sim.add_label("new-label");
    assert!(plane.labels().await.unwrap().is_empty(), "still cached");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(plane.labels().await.unwrap()[0].name, "new-label");
    let before = plane.states().await.unwrap().len();
    sim.add_state("Review", "started");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(plane.states().await.unwrap().len(), before + 1);
}
