//! The read-only web page: `watchdog serve --http ADDR`, and `watchdog run
//! --http ADDR` beside the scans.
//!
//! - `/` the overview (each backend's load against its caps, every open
//!   slot and its holder, the roles, recent events), `/task/TASK` a task's
//!   `explain`; both server-rendered from templates compiled with the code
//!   (askama, which escapes everything it inserts) and refreshing
//!   themselves with a `<meta http-equiv="refresh">`: no script at all.
//! - `/api/overview` and `/api/task/TASK`: the same models as JSON, the
//!   ones `explain --json` prints.
//!
//! Nothing here writes: every route is GET (or HEAD); any other method is
//! 405. Loopback by default: another address is refused at start unless
//! `[http] token_env` names a token, which every request must then carry
//! (`Authorization: Bearer TOKEN`, or HTTP Basic with the token as the
//! password, which browsers ask for). Every answer carries a
//! Content-Security-Policy that allows no script, and no page or answer
//! holds a secret: the models have none to give.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ledger_core::{Clock, Store, Timestamp};
use reconcile::ProcessProbe;
use runtime::{Config, Plane};

use crate::explain::{Explanation, Wait, explain, find_task, gather, wait_text};
use crate::window::{Overview, gather_overview, overview, role_problems};
use crate::{SlotStatus, WatchdogError};

/// The policy every answer carries: nothing but this server's own style
/// sheet; no script, no frame, no form.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STYLE: &str = include_str!("../templates/style.css");

/// How often the overview reloads itself (it asks Plane nothing but the
/// states and labels its client keeps), and a task's page (each load reads
/// the task from Plane: one request of the key's shared budget).
const OVERVIEW_REFRESH_SECS: u64 = 5;
const TASK_REFRESH_SECS: u64 = 30;

/// What the page reads: the ledger, Plane, the process probe, the clock.
#[allow(missing_debug_implementations)]
pub struct Window {
    /// The configuration.
    pub config: Config,
    /// The ledger (read only).
    pub store: Arc<dyn Store>,
    /// The Plane project.
    pub plane: Arc<dyn Plane>,
    /// Whether holders are alive.
    pub probe: Arc<dyn ProcessProbe>,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

/// A token every request must carry.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Whether `offered` is this token, compared in constant time.
    fn accepts(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The token the page must ask for at `addr`, from `[http] token_env`:
/// none on loopback without one; an error naming `[http] token_env` for
/// any other address without one (exit status 2), or when the variable
/// it names is unset or empty.
pub fn token_for(config: &Config, addr: SocketAddr) -> Result<Option<Token>, WatchdogError> {
    match &config.http.token_env {
        None if addr.ip().is_loopback() => Ok(None),
        None => Err(WatchdogError::Misconfigured(format!(
            "--http {addr} is not a loopback address: set [http] token_env to the environment \
             variable holding a token every request must carry, or serve on 127.0.0.1"
        ))),
        Some(name) => match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => Ok(Some(Token(token.trim().to_owned()))),
            _ => Err(WatchdogError::Misconfigured(format!(
                "http.token_env: the environment variable {name} is not set (or empty)"
            ))),
        },
    }
}

struct Shared {
    window: Window,
    token: Option<Token>,
}

/// Binds `addr`, so that an address in use fails at once, and returns the
/// server to run until `shutdown`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, WatchdogError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("--http {addr}: {e}")))?;
    tracing::info!(listen = %listener.local_addr()?, "serving the web page");
    Ok(listener)
}

/// Serves the page on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    window: Window,
    token: Option<Token>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared { window, token });
    let app = axum::Router::new()
        .route("/", get(overview_page))
        .route("/task/{task}", get(task_page))
        .route("/api/overview", get(overview_json))
        .route("/api/task/{task}", get(task_json))
        .route("/style.css", get(style))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Every request: GET or HEAD only, the token when one is set; every
/// answer: the security headers.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let mut response = if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = (
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only: GET and HEAD only\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if let Some(token) = &shared.token
        && !offered(request.headers()).is_some_and(|offered| token.accepts(&offered))
    {
        let mut r = (StatusCode::UNAUTHORIZED, "a token is required\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"inflight\", charset=\"UTF-8\""),
        );
        r
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The token a request offers: a bearer token, or HTTP Basic's password.
fn offered(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded
        .split_once(':')
        .map(|(_, password)| password.to_owned())
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such page\n").into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A failure as an answer: the message, as text (nothing from it is
/// interpreted).
fn failure(status: StatusCode, error: &WatchdogError) -> Response {
    (status, format!("{error}\n")).into_response()
}

fn html(page: Result<String, askama::Error>) -> Response {
    match page {
        Ok(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering failed: {e}\n"),
        )
            .into_response(),
    }
}

impl Window {
    /// The overview, now.
    pub async fn overview(&self) -> Result<Overview, WatchdogError> {
        let (problems, plane_error) = role_problems(&*self.plane, &self.config).await;
        let (config, probe, now) = (self.config.clone(), self.probe.clone(), self.clock.now());
        let facts = runtime::on_store(&self.store, move |s| {
            gather_overview(s, &config, &*probe, now)
        })
        .await?;
        Ok(overview(&facts, &problems, plane_error, &self.config))
    }

    /// `explain` of `asked`, now.
    pub async fn explain(&self, asked: &str) -> Result<Explanation, WatchdogError> {
        let found = find_task(&*self.plane, &self.config, asked).await?;
        let (config, probe, now) = (self.config.clone(), self.probe.clone(), self.clock.now());
        let task = found.task.clone();
        let facts = runtime::on_store(&self.store, move |s| {
            gather(s, &config, &*probe, &task, now)
        })
        .await?;
        Ok(explain(&found, &facts, &self.config))
    }
}

async fn overview_json(State(shared): State<Arc<Shared>>) -> Response {
    match shared.window.overview().await {
        Ok(o) => axum::Json(o).into_response(),
        Err(e) => failure(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

async fn task_json(State(shared): State<Arc<Shared>>, Path(task): Path<String>) -> Response {
    match shared.window.explain(&task).await {
        Ok(e) if e.unknown() => unknown_task(&task),
        Ok(e) => axum::Json(e).into_response(),
        Err(e) => failure(task_failure(&e), &e),
    }
}

fn unknown_task(task: &str) -> Response {
    let error = WatchdogError::UnknownTask(format!(
        "{task}: neither Plane nor the ledger knows this task"
    ));
    failure(StatusCode::NOT_FOUND, &error)
}

fn task_failure(error: &WatchdogError) -> StatusCode {
    match error {
        WatchdogError::UnknownTask(_) | WatchdogError::Usage(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// What the templates call for display.
struct Formats<'a> {
    config: &'a Config,
}

impl Formats<'_> {
    fn duration(&self, secs: &u64) -> String {
        crate::duration_text(*secs)
    }
    fn lease(&self, left: &i64) -> String {
        crate::lease_text(*left)
    }
    /// A path segment with everything but unreserved characters
    /// percent-encoded.
    fn segment(&self, text: &str) -> String {
        let mut out = String::new();
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    /// The task's page in Plane's web app.
    fn plane_link(&self, task: &str) -> String {
        let plane = &self.config.plane;
        format!(
            "{}/{}/projects/{}/issues/{}",
            plane.base_url.trim_end_matches('/'),
            self.segment(&plane.workspace),
            self.segment(&plane.project_id),
            self.segment(task)
        )
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage<'a> {
    at: Timestamp,
    refresh_secs: u64,
    o: &'a Overview,
    display: Formats<'a>,
}

/// The overview as the page's HTML.
pub fn overview_html(o: &Overview, config: &Config) -> Result<String, askama::Error> {
    OverviewPage {
        at: o.at,
        refresh_secs: OVERVIEW_REFRESH_SECS,
        o,
        display: Formats { config },
    }
    .render()
}

async fn overview_page(State(shared): State<Arc<Shared>>) -> Response {
    match shared.window.overview().await {
        Ok(o) => html(overview_html(&o, &shared.window.config)),
        Err(e) => failure(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// One reason a task waits, as the page shows it.
struct WaitView {
    reason: &'static str,
    sentence: String,
    holders: Vec<SlotStatus>,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage<'a> {
    at: Timestamp,
    refresh_secs: u64,
    e: &'a Explanation,
    waits: Vec<WaitView>,
    display: Formats<'a>,
}

impl TaskPage<'_> {
    fn heading(&self) -> String {
        match &self.e.board {
            Some(b) => match &b.identifier {
                Some(id) => format!("{id} {}", b.title),
                None => b.title.clone(),
            },
            None => format!("task {}", self.e.task_id),
        }
    }
}

/// A task's `explain` as the page's HTML, at `at`.
pub fn task_html(e: &Explanation, config: &Config, at: Timestamp) -> Result<String, askama::Error> {
    let waits = e
        .waits
        .iter()
        .map(|w| WaitView {
            reason: wait_reason(w),
            sentence: wait_text(w),
            holders: match w {
                Wait::CapFull { holders, .. } => holders.clone(),
                _ => Vec::new(),
            },
        })
        .collect();
    TaskPage {
        at,
        refresh_secs: TASK_REFRESH_SECS,
        e,
        waits,
        display: Formats { config },
    }
    .render()
}

async fn task_page(State(shared): State<Arc<Shared>>, Path(task): Path<String>) -> Response {
    match shared.window.explain(&task).await {
        Ok(e) if e.unknown() => unknown_task(&task),
        Ok(e) => html(task_html(
            &e,
            &shared.window.config,
            shared.window.clock.now(),
        )),
        Err(e) => failure(task_failure(&e), &e),
    }
}

fn wait_reason(wait: &Wait) -> &'static str {
    match wait {
        Wait::NotOnBoard => "not_on_board",
        Wait::NoRoleClaimsState { .. } => "no_role_claims_state",
        Wait::MissingLabels { .. } => "missing_labels",
        Wait::RoleWaitsForNames { .. } => "role_waits_for_names",
        Wait::AttemptsExhausted { .. } => "attempts_exhausted",
        Wait::CapFull { .. } => "cap_full",
        Wait::RateFull { .. } => "rate_full",
        Wait::BudgetPaused { .. } => "budget_paused",
        Wait::Ready { .. } => "ready",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode_and_tokens_compare_whole() {
        // "anyone:s3cret" in base64.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YW55b25lOnMzY3JldA=="),
        );
        assert_eq!(offered(&headers).as_deref(), Some("s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(offered(&headers).as_deref(), Some("s3cret"));
        let token = Token("s3cret".into());
        assert!(token.accepts("s3cret"));
        assert!(!token.accepts("s3cre"));
        assert!(!token.accepts("s3cret!"));
        assert!(!token.accepts(""));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(offered(&headers), None);
    }
}
