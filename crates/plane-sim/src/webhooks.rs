//! Webhook deliveries the way real Plane sends them
//! (`webhook-*.json` in the fixtures): one POST per changed field, about
//! 0.1 s after the change, each with the whole work item as `data` (state
//! and labels expanded, the description fields the API's GET lacks, no
//! `type_id`), the body written as Python's `json.dumps` writes it
//! (`", "` and `": "`, non-ASCII as `\uXXXX`), signed in
//! `X-Plane-Signature` with the lowercase hex HMAC-SHA256 of those bytes.
//!
//! A delivery that fails (no answer, or not 2xx) is sent again after a
//! random delay of up to 600 s ([`RETRY_WITHIN`], shortened in tests), up
//! to [`RETRIES`] times; after [`FAILURES_TO_DEACTIVATE`] failures in a
//! row the webhook is set inactive, as a real Plane was seen to do: it
//! sends nothing more, retries included, until someone enables it again.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long after a change Plane's workers send its deliveries (115 ms was
/// recorded).
pub(crate) const DELIVERY_DELAY: Duration = Duration::from_millis(100);

/// How long after a failure a delivery is sent again, at most (Plane: a
/// random delay of 0 to 600 s).
pub(crate) const RETRY_WITHIN: Duration = Duration::from_secs(600);

/// How many times a failed delivery is sent again.
pub(crate) const RETRIES: u32 = 5;

/// Failures in a row after which a webhook is set inactive.
pub(crate) const FAILURES_TO_DEACTIVATE: u32 = 5;

/// A webhook registered with the simulator.
#[derive(Debug, Clone)]
pub(crate) struct SimWebhook {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) secret: String,
    /// Whether it is sent to (Plane's `is_active`).
    pub(crate) active: bool,
    /// Failed deliveries since the last one that went through.
    pub(crate) failures: u32,
}

/// One delivery the simulator sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentDelivery {
    /// `X-Plane-Delivery`.
    pub delivery_id: String,
    /// The work item.
    pub item_id: String,
    /// `activity.field`.
    pub field: String,
    /// The answer's status; 0 when the receiver could not be reached.
    pub status: u16,
    /// When it was sent, since the simulator started.
    pub at: Duration,
}

/// A delivery ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The webhook it is sent for.
    pub(crate) hook_id: String,
    /// How many times it was sent before.
    pub(crate) attempt: u32,
    pub(crate) url: String,
    pub(crate) delivery_id: String,
    pub(crate) item_id: String,
    pub(crate) field: String,
    pub(crate) body: Vec<u8>,
    pub(crate) signature: String,
}

/// A field's value before and after a change.
pub(crate) type Change = (&'static str, Value, Value);

/// The body of one delivery of `change` to the work item rendered as
/// `data`, as Plane's workers write it: the event, the whole item, and the
/// activity of the field that changed.
pub(crate) fn payload(
    hook: &SimWebhook,
    workspace_id: &str,
    user_id: &str,
    mut data: Value,
    change: &Change,
) -> Vec<u8> {
    let (field, old, new) = change;
    if let Some(object) = data.as_object_mut() {
        object.remove("type_id");
        object.insert("assignees".into(), json!([]));
        object.insert("description".into(), json!({}));
        object.insert("description_json".into(), json!({}));
        object.insert("description_stripped".into(), json!(""));
    }
    let payload = json!({
        "event": "issue",
        "action": "updated",
        "webhook_id": hook.id,
        "workspace_id": workspace_id,
        "data": data,
        "activity": {
            "field": field,
            "new_value": new,
            "old_value": old,
            "actor": {
                "id": user_id,
                "first_name": "Sim",
                "last_name": "",
                "email": "<EMAIL>",
                "avatar": "",
                "avatar_url": null,
                "display_name": "sim",
            },
            "old_identifier": null,
            "new_identifier": null,
        },
    });
    python_json(&payload).into_bytes()
}

/// Lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `value` as Python's `json.dumps(value)` writes it.
pub fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python(value, &mut out);
    out
}

fn write_python(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(key, out);
                out.push_str(": ");
                write_python(item, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string with `ensure_ascii`: everything outside ASCII escaped.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Sends `delivery` as python-requests does, and returns the answer's
/// status (0: no answer).
pub(crate) async fn send(delivery: &Outgoing) -> u16 {
    let Some(rest) = delivery.url.strip_prefix("http://") else {
        return 0;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let connect = tokio::net::TcpStream::connect(authority);
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(5), connect).await else {
        return 0;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: Autopilot\r\n\
         Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: close\r\n\
         Content-Type: application/json\r\nX-Plane-Delivery: {}\r\nX-Plane-Event: issue\r\n\
         X-Plane-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        delivery.delivery_id,
        delivery.signature,
        delivery.body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err()
        || stream.write_all(&delivery.body).await.is_err()
    {
        return 0;
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    // "HTTP/1.1 200 OK"
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sends the deliveries the world queued (call it once the world's lock
/// is released), on `runtime`.
pub(crate) fn send_queued(
    shared: &std::sync::Arc<crate::Shared>,
    runtime: &tokio::runtime::Handle,
) {
    let outgoing = std::mem::take(&mut shared.world().outbox);
    if !outgoing.is_empty() {
        runtime.spawn(deliver(shared.clone(), outgoing));
    }
}

/// Sends `deliveries` in order after [`DELIVERY_DELAY`], recording each.
async fn deliver(shared: std::sync::Arc<crate::Shared>, deliveries: Vec<Outgoing>) {
    tokio::time::sleep(DELIVERY_DELAY).await;
    for delivery in deliveries {
        deliver_one(shared.clone(), delivery).await;
    }
}

/// Sends one delivery if its webhook is active, records it, counts a
/// failure against the webhook (setting it inactive at the fifth in a
/// row) and schedules the delivery again after a random delay.
fn deliver_one(
    shared: std::sync::Arc<crate::Shared>,
    delivery: Outgoing,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move { deliver_once(&shared, delivery).await })
}

async fn deliver_once(shared: &std::sync::Arc<crate::Shared>, delivery: Outgoing) {
    let active = |shared: &crate::Shared| {
        shared
            .world()
            .webhooks
            .iter()
            .any(|h| h.id == delivery.hook_id && h.active)
    };
    if !active(shared) {
        return;
    }
    let status = send(&delivery).await;
    shared.control().sent.push(SentDelivery {
        delivery_id: delivery.delivery_id.clone(),
        item_id: delivery.item_id.clone(),
        field: delivery.field.clone(),
        status,
        at: shared.started.elapsed(),
    });
    let went_through = (200..300).contains(&status);
    {
        let mut world = shared.world();
        if let Some(hook) = world.webhooks.iter_mut().find(|h| h.id == delivery.hook_id) {
            if went_through {
                hook.failures = 0;
            } else {
                hook.failures += 1;
                if hook.failures >= FAILURES_TO_DEACTIVATE {
                    hook.active = false;
                }
            }
        }
    }
    if went_through || delivery.attempt >= RETRIES || !active(shared) {
        return;
    }
    let within = shared.control().webhook_retry_within;
    let delay = within.mul_f64(fastrand::f64());
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let again = Outgoing {
            attempt: delivery.attempt + 1,
            ..delivery
        };
        deliver_one(shared, again).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_written_as_python_writes_them() {
        let value = json!({"a": [1, "é"], "b": {"c": null}});
        // serde_json keeps keys sorted without `preserve_order`.
        assert_eq!(
            python_json(&value),
            r#"{"a": [1, "\u00e9"], "b": {"c": null}}"#
        );
    }

    #[test]
    fn the_recorded_delivery_is_signed_as_plane_signed_it() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../plane-client/tests/fixtures/webhook-issue-state-change.json"
        );
        let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let delivery = &file["deliveries"][0];
        let raw = delivery["raw_body"].as_str().unwrap();
        assert_eq!(
            sign(
                file["webhook"]["secret_key"].as_str().unwrap(),
                raw.as_bytes()
            ),
            delivery["headers"]["X-Plane-Signature"].as_str().unwrap()
        );
    }
}
