//! The web page (`watchdog serve --http`) in a real browser, and its
//! guards: loopback unless a token is configured, the token, GET only, the
//! Content-Security-Policy, no secret in any answer.

use std::path::PathBuf;
use std::time::Duration;

use ledger_core::{EventKind, LedgerStore, TaskId};

use crate::browser::Browser;
use crate::metrics::{free_port, http_with as http};
use crate::support::*;

const GOAL: Role = Role::new("goal", "Ready for AI");
const WEBHOOK_SECRET: &str = "plane_wh_e2e_webhook_secret_not_for_pages";
const DB_PASSWORD: &str = "e2e-database-password-not-for-pages";
const HTTP_TOKEN: &str = "e2e-page-token-4f1c";

/// Waits for the page to answer on `port`.
fn wait_for_page(port: u16, authorization: Option<&str>) {
    wait_until(Duration::from_secs(30), "the page answers", || {
        http(port, "GET", "/style.css", authorization).0 == 200
    });
}

/// `target/screenshots/`, where the closing notes' pictures come from.
fn screenshots() -> PathBuf {
    let target = bin("watchdog");
    target
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("screenshots")
}

/// A world whose configuration names every kind of secret: the Plane key
/// (always), the database's password, a webhook secret, the page's token.
fn world_with_secrets(cap: u32) -> World {
    let world = World::with_executor_env(
        cap,
        &[GOAL],
        &[
            ("E2E_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("E2E_DB_PASSWORD", DB_PASSWORD),
            ("E2E_HTTP_TOKEN", HTTP_TOKEN),
        ],
    )
    .on_postgres();
    world.configure("ledger", "password_env = \"E2E_DB_PASSWORD\"");
    world
}

/// The configuration for `watchdog serve`: the world's, with a webhook and
/// (when `token`) the page's token.
fn serve_config(world: &World, token: bool) -> PathBuf {
    let mut text = std::fs::read_to_string(&world.config).unwrap();
    text.push_str("\n[webhook]\nlisten = \"127.0.0.1:1\"\nsecret_env = \"E2E_WEBHOOK_SECRET\"\n");
    if token {
        text.push_str("\n[http]\ntoken_env = \"E2E_HTTP_TOKEN\"\n");
    }
    let path = world.path(if token {
        "serve-token.toml"
    } else {
        "serve.toml"
    });
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_page_shows_a_live_slot_a_dead_holder_and_a_denial_in_chromium() {
    let mut world = world_with_secrets(2);
    world.configure("roles.goal", "parallel = 2");
    // One live slot: a runner's executor that keeps running.
    let live = world
        .sim
        .add_work_item("hang: a long agent session", "Ready for AI");
    world.start_runner("goal", "runner");
    wait_until(Duration::from_secs(30), "the live task runs", || {
        !world.executor_pids(&live).is_empty()
    });
    // One dead holder: a slot a runner of this host left behind after the
    // runner's start-up sweep.
    let dead = world.sim.add_work_item("a dead runner's job", "Running");
    world.slot_of_a_dead_runner(&dead);
    // One denial: the next task finds both slots taken.
    let xss = world
        .sim
        .add_work_item("<script>alert(1)</script>", "Ready for AI");
    let xss_id = TaskId::new(xss.clone()).unwrap();
    wait_until(Duration::from_secs(30), "the task is denied", || {
        world
            .pg()
            .task_events(&xss_id, 10)
            .unwrap()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Denied { .. }))
    });

    let port = free_port();
    let config = serve_config(&world, false);
    let address = format!("127.0.0.1:{port}");
    world.spawn_with_config(&config, "watchdog", &["serve", "--http", &address], "serve");
    wait_for_page(port, None);

    let mut browser = Browser::start(1400, 1000);
    browser.open(&format!("http://{address}/"));
    let text = browser.text();
    assert!(text.contains("hang: a long agent session"), "{text}");
    assert_eq!(
        browser.eval("document.querySelectorAll('tr.slot.alive').length"),
        1
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('tr.slot.dead').length"),
        1
    );
    let dead_row = browser.eval("document.querySelector('tr.slot.dead').innerText");
    assert!(dead_row.as_str().unwrap().contains(&dead), "{dead_row}");
    assert!(
        browser
            .eval("document.querySelectorAll('tr.event.denied').length")
            .as_u64()
            .unwrap()
            >= 1
    );
    let capacity = browser.eval("document.querySelector('#capacity tbody tr').innerText");
    assert!(capacity.as_str().unwrap().contains("2 / 2"), "{capacity}");
    assert_eq!(
        browser.eval("document.querySelectorAll('script').length"),
        0
    );
    let budget = browser.eval("document.querySelector('#budget tbody tr').innerText");
    assert!(
        budget.as_str().unwrap().contains("E2E_PLANE_KEY"),
        "{budget}"
    );
    let overview_png = browser.screenshot(&screenshots().join("overview.png"));

    browser.open(&format!("http://{address}/task/{xss}"));
    let text = browser.text();
    assert!(
        text.contains("<script>alert(1)</script>"),
        "the title, as text: {text}"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('script').length"),
        0,
        "no script element"
    );
    assert!(
        browser.seen("Page.javascriptDialogOpening").is_empty(),
        "no alert"
    );
    assert!(
        text.contains(
            "backend local is full: backends.local.max_concurrent is 2 and 2 slot(s) hold it"
        ),
        "{text}"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('li.cap_full tr.slot.dead').length"),
        1
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('li.cap_full tr.slot.alive').length"),
        1
    );
    assert!(text.contains("denied on local"), "its history: {text}");
    // A task neither Plane nor the ledger knows.
    let (status, _, body) = http(port, "GET", "/task/ROCK-999", None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("ROCK-999"), "{body}");
    let task_png = browser.screenshot(&screenshots().join("task.png"));
    for png in [overview_png, task_png] {
        assert!(
            std::fs::metadata(&png).unwrap().len() > 10_000,
            "{png:?} is a real picture"
        );
    }

    // Every answer: the policy, and no secret.
    for path in [
        "/",
        &format!("/task/{xss}"),
        "/api/overview",
        &format!("/api/task/{xss}"),
        "/style.css",
    ] {
        let (status, head, body) = http(port, "GET", path, None);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-security-policy: default-src 'none'"),
            "{path}: {head}"
        );
        for secret in [KEY, WEBHOOK_SECRET, DB_PASSWORD, HTTP_TOKEN] {
            assert!(
                !body.contains(secret) && !head.contains(secret),
                "{path} shows a secret"
            );
        }
    }
    let (_, _, api) = http(port, "GET", &format!("/api/task/{xss}"), None);
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["board"]["title"], "<script>alert(1)</script>");
    assert_eq!(api["waits"][0]["reason"], "cap_full");
}

#[test]
fn the_page_refuses_an_open_address_without_a_token_and_writes_nothing() {
    let mut world = world_with_secrets(1);
    drop(world.pg()); // the schema, as a runner's first start leaves it

    // Not loopback, no token: refused at start, naming the key.
    let port = free_port();
    let open = format!("0.0.0.0:{port}");
    let out = world.watchdog_with(&serve_config(&world, false), &["serve", "--http", &open]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[http] token_env"), "{stderr}");

    // With a token: every request must carry it.
    world.spawn_with_config(
        &serve_config(&world, true),
        "watchdog",
        &["serve", "--http", &open],
        "serve",
    );
    let bearer = format!("Bearer {HTTP_TOKEN}");
    wait_for_page(port, Some(&bearer));
    for path in ["/", "/api/overview", "/style.css"] {
        let (status, head, body) = http(port, "GET", path, None);
        assert_eq!(status, 401, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{head}"
        );
        assert!(!body.contains(HTTP_TOKEN));
        assert_eq!(http(port, "GET", path, Some("Bearer not-the-token")).0, 401);
        assert_eq!(http(port, "GET", path, Some(&bearer)).0, 200, "{path}");
    }
    // HTTP Basic, as a browser asks: any user, the token as the password.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("operator:{HTTP_TOKEN}"));
    assert_eq!(
        http(port, "GET", "/", Some(&format!("Basic {basic}"))).0,
        200
    );
    assert_eq!(http(port, "HEAD", "/api/overview", Some(&bearer)).0, 200);
    // Nothing but GET and HEAD, token or not.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let (status, head, _) = http(port, method, "/", Some(&bearer));
        assert_eq!(status, 405, "{method}: {head}");
        assert!(
            head.contains("allow: GET, HEAD") || head.contains("Allow: GET, HEAD"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-security-policy"),
            "{head}"
        );
    }
}
