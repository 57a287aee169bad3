//! plane-sim's own behaviour: Plane's edge cases, and the binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use plane_sim::{DEFAULT_API_KEY, Fault, FaultRule, PlaneSim, SimConfig};
use serde_json::{Value, json};

async fn get(sim: &PlaneSim, path_and_query: &str) -> (u16, Value) {
    send(sim, "GET", path_and_query, None).await
}

async fn send(
    sim: &PlaneSim,
    method: &str,
    path_and_query: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = http
        .request(
            method.parse().unwrap(),
            format!("{}{path_and_query}", sim.base_url()),
        )
        .header("X-API-Key", DEFAULT_API_KEY);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn items_path(sim: &PlaneSim) -> String {
    format!(
        "/api/v1/workspaces/acme/projects/{}/work-items/",
        sim.project_id()
    )
}

#[tokio::test]
async fn pagination_follows_plane_including_its_errors() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    for i in 0..5 {
        sim.add_work_item(&format!("t{i}"), "Todo");
    }
    let base = items_path(&sim);
    let (status, page) = get(&sim, &format!("{base}?per_page=2&cursor=2:1:0")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            page["count"].clone(),
            page["next_cursor"].clone(),
            page["prev_cursor"].clone(),
            page["total_pages"].clone()
        ),
        (json!(2), json!("2:2:0"), json!("2:0:1"), json!(3))
    );
    assert_eq!(page["results"][0]["name"], "t2", "newest first, offset 2");
    let (_, past) = get(&sim, &format!("{base}?per_page=2&cursor=2:10:0")).await;
    assert_eq!(
        (past["count"].clone(), past["next_page_results"].clone()),
        (json!(0), json!(false))
    );
    assert_eq!(
        get(&sim, &format!("{base}?per_page=1001")).await,
        (
            400,
            json!({"detail": "Invalid per_page value. Cannot exceed 1000."})
        )
    );
    assert_eq!(
        get(&sim, &format!("{base}?per_page=x")).await,
        (400, json!({"detail": "Invalid per_page parameter."}))
    );
    assert_eq!(get(&sim, &format!("{base}?per_page=0")).await.0, 500);
    assert_eq!(
        get(&sim, &format!("{base}?cursor=bad")).await,
        (400, json!({"detail": "Invalid cursor parameter."}))
    );
    assert_eq!(
        get(&sim, &format!("{base}?cursor=2:-1:1")).await,
        (400, json!({"detail": "Error in parsing"}))
    );
}

#[tokio::test]
async fn plane_s_quirks_are_reproduced() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    let task = sim.add_work_item("t", "Todo");
    let item = format!("{}{task}/", items_path(&sim));
    // No trailing slash: a redirect, not an answer.
    assert_eq!(get(&sim, item.trim_end_matches('/')).await.0, 301);
    assert_eq!(
        send(&sim, "PUT", &item, Some(json!({}))).await,
        (405, json!({"detail": "Method \"PUT\" not allowed."}))
    );
    let (status, body) = send(&sim, "PATCH", &item, Some(json!({"state": "nope"}))).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"state": ["\u{201c}nope\u{201d} is not a valid UUID."]})
        )
    );
    let unknown = format!(
        "{}00000000-0000-4000-8000-000000000001/comments/",
        items_path(&sim)
    );
    assert_eq!(
        send(&sim, "POST", &unknown, Some(json!({"comment_html": "x"}))).await,
        (400, json!({"error": "The payload is not valid"}))
    );
    // A comment on a deleted item is accepted; a GET of it is a 404.
    sim.delete_work_item(&task);
    assert_eq!(
        send(
            &sim,
            "POST",
            &format!("{item}comments/"),
            Some(json!({"comment_html": "late"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(get(&sim, &item).await.0, 404);
    // An archived item still takes a PATCH.
    let archived = sim.add_work_item("a", "Done");
    sim.archive_work_item(&archived);
    let done = sim
        .states()
        .into_iter()
        .find(|s| s.name == "Todo")
        .unwrap()
        .id;
    assert_eq!(
        send(
            &sim,
            "PATCH",
            &format!("{}{archived}/", items_path(&sim)),
            Some(json!({"state": done}))
        )
        .await
        .0,
        200
    );
    assert_eq!(sim.state_of(&archived).as_deref(), Some("Todo"));
}

#[tokio::test]
async fn faults_apply_to_matching_requests_for_as_many_times_as_asked() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    let task = sim.add_work_item("t", "Todo");
    let item = format!("{}{task}/", items_path(&sim));
    sim.inject(
        FaultRule::new(Fault::Status(503))
            .on_path(&task)
            .on_method("GET")
            .times(2),
    );
    assert_eq!(get(&sim, &item).await.0, 503);
    assert_eq!(
        get(&sim, &items_path(&sim)).await.0,
        200,
        "another path is unaffected"
    );
    assert_eq!(get(&sim, &item).await.0, 503);
    assert_eq!(get(&sim, &item).await.0, 200, "used up");
    sim.inject(FaultRule::new(Fault::ProjectForbidden));
    assert_eq!(get(&sim, &item).await.0, 403);
    sim.clear_faults();
    sim.inject(FaultRule::new(Fault::Latency(Duration::from_millis(200))).times(1));
    let started = std::time::Instant::now();
    assert_eq!(get(&sim, &item).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200, 503, 200, 403, 200]);
}

#[test]
fn the_binary_serves_a_seed_and_prints_where() {
    let dir = std::env::temp_dir().join(format!("plane-sim-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("seed.json");
    // The example seed of docs/operations.md, which `--help` points to.
    let docs = include_str!("../../../../docs/operations.md");
    let section = &docs[docs
        .find("## Trying it without a Plane: `plane-sim`")
        .unwrap()..];
    let example = section.split("```json\n").nth(1).unwrap();
    let example = &example[..example.find("```").unwrap()];
    std::fs::write(&seed, example).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plane-sim"))
        .args(["--port", "0", "--seed"])
        .arg(&seed)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(info["workspace"], "demo");
    let url = format!(
        "{}/api/v1/workspaces/demo/projects/{}/work-items/?expand=state",
        info["base_url"].as_str().unwrap(),
        info["project_id"].as_str().unwrap()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body: Value = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = reqwest::Client::new()
            .get(url)
            .header("X-API-Key", "plane_api_demo")
            .send()
            .await
            .unwrap();
        serde_json::from_str(&response.text().await.unwrap()).unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(body["results"][0]["name"], "first");
    assert_eq!(body["results"][0]["state"]["name"], "Ready for AI");

    std::fs::write(
        &seed,
        r#"{"work_items": [{"name": "x", "state": "Nowhere"}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plane-sim"))
        .args(["--port", "0", "--seed"])
        .arg(&seed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown state \"Nowhere\""));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn board_administration_behaves_like_plane() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    let project = format!("/api/v1/workspaces/acme/projects/{}", sim.project_id());
    let review = sim.add_state("Review", "started");
    let task = sim.add_work_item("t", "Review");

    // A state that holds a work item, or the default state, is not deleted.
    assert_eq!(
        sim.delete_state("Review"),
        Err("The state is not empty, only empty states can be deleted".into())
    );
    let backlog = sim.states().into_iter().find(|s| s.default).unwrap();
    let (status, body) = send(
        &sim,
        "DELETE",
        &format!("{project}/states/{}/", backlog.id),
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "Default state cannot be deleted"}))
    );

    // Emptied, deleted and re-created under the same name: 200, a new id,
    // and a PATCH to the old id is refused with Plane's words.
    assert!(sim.set_state(&task, "Todo"));
    let (status, _) = send(&sim, "DELETE", &format!("{project}/states/{review}/"), None).await;
    assert_eq!(status, 204);
    let (status, state) = send(
        &sim,
        "POST",
        &format!("{project}/states/"),
        Some(json!({"name": "Review", "group": "started", "color": "#F97316"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(state["id"], review.as_str());
    assert_eq!(state["slug"], "review");
    let (status, body) = send(
        &sim,
        "PATCH",
        &format!("{project}/work-items/{task}/"),
        Some(json!({"state": review})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"state": [format!("Invalid pk \"{review}\" - object does not exist.")]})
    );

    // Labels are listed newest first.
    sim.add_label("older");
    let (status, _) = send(
        &sim,
        "POST",
        &format!("{project}/labels/"),
        Some(json!({"name": "newer"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, labels) = get(&sim, &format!("{project}/labels/")).await;
    let names: Vec<&str> = labels["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["newer", "older"]);
}

#[tokio::test]
async fn a_guest_reads_and_comments_but_changes_nothing_and_spends_no_quota() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    let task = sim.add_work_item("t", "Todo");
    let done = sim.states().into_iter().find(|s| s.name == "Done").unwrap();
    sim.set_member_role(DEFAULT_API_KEY, plane_sim::MemberRole::Guest);
    let item = format!("{}{task}/", items_path(&sim));
    let (status, _) = get(&sim, &item).await;
    assert_eq!(status, 200);
    let (status, body) = send(&sim, "PATCH", &item, Some(json!({"state": done.id}))).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"detail": "You do not have permission to perform this action."})
        )
    );
    assert_eq!(sim.state_of(&task).as_deref(), Some("Todo"));
    let (status, _) = send(
        &sim,
        "POST",
        &format!("{item}comments/"),
        Some(json!({"comment_html": "<p>hi</p>"})),
    )
    .await;
    assert_eq!(status, 201);
    // The refused PATCH did not count: two requests of 60 were used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("{}{item}", sim.base_url()))
        .header("X-API-Key", DEFAULT_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-ratelimit-remaining"], "57");
}

#[tokio::test]
async fn lists_honour_fields_and_order_by_like_plane() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    for i in 1..=3 {
        sim.add_work_item(&format!("t{i}"), "Todo");
    }
    let base = items_path(&sim);
    let (_, page) = get(
        &sim,
        &format!("{base}?order_by=created_at&fields=id,name,state&expand=state"),
    )
    .await;
    let first = &page["results"][0];
    assert_eq!(first["name"], "t1", "oldest first");
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "name", "state"]);
    assert_eq!(first["state"]["name"], "Todo");
    let (_, page) = get(&sim, &base).await;
    assert_eq!(page["results"][0]["name"], "t3", "newest first by default");
    // Parameters are percent-decoded like Django does, `%2c` included.
    let (_, page) = get(
        &sim,
        &format!("{base}?fields=id%2cname&order_by=created%5Fat"),
    )
    .await;
    let mut keys: Vec<&String> = page["results"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "name"]);
    assert_eq!(page["results"][0]["name"], "t1");
    let (status, body) = get(&sim, &format!("{base}?order_by=nosuchfield")).await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({"error": "Something went wrong please try again later"})
        )
    );
    // A missing trailing slash is redirected only where the slash would
    // match a route; the query is kept.
    let (status, _) = get(
        &sim,
        &format!("{}?expand=state", base.trim_end_matches('/')),
    )
    .await;
    assert_eq!(status, 301);
    let (status, body) = get(&sim, "/api/v1/nothing-here").await;
    assert_eq!((status, body), (404, json!({"error": "Page not found."})));
}

/// A delivery that fails is sent again after a random delay (here up to
/// 100 ms instead of Plane's 600 s); five failures in a row set the
/// webhook inactive, after which nothing is sent, retries included, until
/// it is enabled again.
#[tokio::test]
async fn failed_deliveries_are_retried_then_the_webhook_is_set_inactive() {
    let sim = PlaneSim::start(SimConfig::default()).await.unwrap();
    sim.set_webhook_retry_within(Duration::from_millis(100));
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = sim.add_webhook(&format!("http://127.0.0.1:{port}/hook"), "s");
    let task = sim.add_work_item("t", "Todo");
    assert!(sim.set_state(&task, "In Progress"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim.webhook_active(&hook) {
        assert!(std::time::Instant::now() < deadline, "never set inactive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = sim.deliveries();
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert!(sent.iter().all(|d| d.status == 0 && d.item_id == task));
    // The same delivery, sent again (one id), at growing times.
    assert!(sent.iter().all(|d| d.delivery_id == sent[0].delivery_id));
    // Inactive: a change sends nothing.
    assert!(sim.set_state(&task, "Done"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sim.deliveries().len(), 5);
    // Enabled again, with a receiver: the next change is delivered.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let answered = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let _ = conn.read(&mut buf).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
    });
    sim.enable_webhook(&hook);
    assert!(sim.set_state(&task, "Todo"));
    answered.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sim.deliveries().len() < 6 {
        assert!(std::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.deliveries()[5].status, 200);
    assert!(sim.webhook_active(&hook));
}
