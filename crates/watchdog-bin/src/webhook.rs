//! Plane's webhook deliveries, received by `watchdog run` (`[webhook]`):
//! each is verified (`X-Plane-Signature`, HMAC-SHA256 of the raw body),
//! read, and, when it says a work item of the configured project is in a
//! role's claim state, written to the store as a board hint, which wakes
//! the runners of that role within their hint poll. Nothing else: a
//! delivery is never a claim (the runner re-reads the item from Plane as
//! for any candidate), so a replayed, repeated or forged-but-signed one
//! costs at most a re-read.
//!
//! Each delivery is counted by verdict (`hinted`, `ignored`, `repeated`,
//! `unauthorized`, `malformed`, `too_large`, `failed`).
//!
//! Answers: 200 for a verified delivery (used or not: Plane disables a
//! webhook whose deliveries keep failing), 401 for a missing or wrong
//! signature, 400 for a signed body that is not a delivery, 413 for a body
//! over `max_body_bytes`, 405 for anything but POST.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use ledger_core::{Clock, FleetStore};
use plane_client::webhook::{self, WebhookError, WebhookSecret};
use plane_client::{StateRef, same_name};
use runtime::{Config, on_store};

/// How many delivery ids are remembered to spot a replay.
const REMEMBERED: usize = 4096;

/// What receives deliveries for one configuration.
pub struct Receiver {
    secret: WebhookSecret,
    store: Arc<dyn FleetStore>,
    clock: Arc<dyn Clock>,
    board: String,
    project_id: String,
    claim_states: Vec<String>,
    max_body: usize,
    /// The latest delivery ids, oldest first.
    seen: std::sync::Mutex<std::collections::VecDeque<String>>,
    /// Counts deliveries by verdict (`inflight_webhook_deliveries_total`).
    metrics: Arc<runtime::Metrics>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("board", &self.board)
            .field("claim_states", &self.claim_states)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver for `config`'s project and roles, verifying with
    /// `secret`, writing hints to `store`. `max_body` is
    /// `webhook.max_body_bytes`.
    pub fn new(
        config: &Config,
        secret: WebhookSecret,
        store: Arc<dyn FleetStore>,
        clock: Arc<dyn Clock>,
        max_body: usize,
        metrics: Arc<runtime::Metrics>,
    ) -> Self {
        let mut claim_states: Vec<String> = config
            .roles
            .values()
            .map(|r| r.claim_state.clone())
            .collect();
        claim_states.dedup();
        metrics.webhooks_listening();
        Self {
            secret,
            store,
            clock,
            board: runtime::board_key(config),
            project_id: config.plane.project_id.clone(),
            claim_states,
            max_body,
            seen: std::sync::Mutex::new(std::collections::VecDeque::new()),
            metrics,
        }
    }

    /// Answers one delivery: its headers and its raw body.
    pub async fn receive(&self, headers: &HeaderMap, body: &[u8]) -> (StatusCode, &'static str) {
        let delivery = delivery_id(headers);
        if body.len() > self.max_body {
            return self.too_large(delivery);
        }
        let signature = header_text(headers, "x-plane-signature");
        if let Err(error) = webhook::verify(&self.secret, body, signature) {
            self.metrics.webhook("unauthorized");
            let why = match error {
                WebhookError::MissingSignature => "no signature",
                _ => "wrong signature",
            };
            tracing::warn!(delivery = %delivery, why, bytes = body.len(), "refused a webhook delivery");
            return (StatusCode::UNAUTHORIZED, "signature refused\n");
        }
        let decoded = match webhook::decode(body) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.metrics.webhook("malformed");
                tracing::warn!(delivery = %delivery, %error, "refused a signed webhook delivery that is not one");
                return (StatusCode::BAD_REQUEST, "not a Plane webhook payload\n");
            }
        };
        if self.repeated(delivery) {
            self.metrics.webhook("repeated");
            tracing::info!(delivery = %delivery, "a webhook delivery received before; ignored");
            return (StatusCode::OK, "already received\n");
        }
        let wanted = decoded
            .item
            .filter(|_| decoded.project.as_deref() == Some(self.project_id.as_str()))
            .filter(|_| matches!(decoded.field.as_deref(), Some("state") | None))
            .filter(|item| match &item.state {
                StateRef::Expanded(state) => self
                    .claim_states
                    .iter()
                    .any(|claim| same_name(claim, &state.name)),
                // A bare id cannot be matched here; the runners resolve it.
                StateRef::Id(_) => true,
            });
        let Some(item) = wanted else {
            self.metrics.webhook("ignored");
            tracing::debug!(delivery = %delivery, event = %decoded.event, action = %decoded.action, field = ?decoded.field, "a webhook delivery no runner needs");
            return (StatusCode::OK, "ignored\n");
        };
        let hint = runtime::encode_hint(&item);
        let (board, now) = (self.board.clone(), self.clock.now());
        match on_store(&self.store, move |s| s.add_board_hint(&board, &hint, now)).await {
            Ok(seq) => {
                self.metrics.webhook("hinted");
                tracing::info!(delivery = %delivery, task = %item.id, seq, "a webhook says a task is in a claim state; runners woken");
                (StatusCode::OK, "ok\n")
            }
            Err(error) => {
                self.metrics.webhook("failed");
                // Not a 2xx: Plane records the failure, and the reconciling
                // poll still finds the task.
                tracing::warn!(delivery = %delivery, %error, "could not record a webhook's hint");
                (StatusCode::SERVICE_UNAVAILABLE, "could not record it\n")
            }
        }
    }

    /// Whether `delivery` was received before; remembers it.
    fn repeated(&self, delivery: &str) -> bool {
        if delivery == "-" {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.iter().any(|d| d == delivery) {
            return true;
        }
        if seen.len() >= REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(delivery.to_owned());
        false
    }

    fn too_large(&self, delivery: &str) -> (StatusCode, &'static str) {
        self.metrics.webhook("too_large");
        tracing::warn!(delivery = %delivery, limit = self.max_body, "refused a webhook delivery over the size cap");
        (StatusCode::PAYLOAD_TOO_LARGE, "too large\n")
    }
}

/// A header's value, when it is text.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `X-Plane-Delivery`, for logs and to spot a replay (`-`: none).
fn delivery_id(headers: &HeaderMap) -> &str {
    header_text(headers, "x-plane-delivery").unwrap_or("-")
}

async fn answer(
    State(receiver): State<Arc<Receiver>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, &'static str) {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    // Refused before reading when the sender says it is too large.
    let declared = header_text(&headers, header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > receiver.max_body) {
        return receiver.too_large(delivery_id(&headers));
    }
    let body = match to_bytes(body, receiver.max_body).await {
        Ok(body) => body,
        Err(_) => {
            tracing::debug!(%peer, "a webhook body was cut off or over the cap");
            return receiver.too_large(delivery_id(&headers));
        }
    };
    receiver.receive(&headers, &body).await
}

/// Serves deliveries on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    receiver: Arc<Receiver>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(answer).with_state(receiver);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
