//! Plane's webhook deliveries: checking their signature and reading them.
//!
//! Plane signs each delivery with the header `X-Plane-Signature`: the
//! lowercase hex HMAC-SHA256 of the raw request body under the webhook's
//! secret (`plane_wh_…`), with no timestamp and no prefix. It sends one
//! delivery per changed field, each with the whole work item as `data`
//! (its `state` and `labels` expanded), about a tenth of a second after the
//! change. A delivery is news, not a command: it may be replayed, repeated
//! or lost, so a receiver treats it as a hint to look, never as a claim.
//!
//! ```
//! use plane_client::webhook::{self, WebhookSecret};
//!
//! let secret = WebhookSecret::new("plane_wh_0123");
//! let body = br#"{"event": "issue", "action": "updated", "data": {"id": "a1"}}"#;
//! let signature = webhook::sign(&secret, body);
//! assert!(webhook::verify(&secret, body, Some(&signature)).is_ok());
//! assert!(webhook::verify(&secret, b"{}", Some(&signature)).is_err());
//! let delivery = webhook::decode(body).unwrap();
//! assert_eq!(delivery.event, "issue");
//! ```

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::WorkItem;

/// A webhook's secret. It never appears in `Debug`, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// Reads the secret from the environment variable `name`; the error
    /// names the variable, never a value.
    pub fn from_env(name: &str) -> Result<Self, String> {
        match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(Self(value.trim().to_owned())),
            Ok(_) => Err(format!(
                "environment variable {name} is empty; it must hold the webhook's secret"
            )),
            Err(_) => Err(format!(
                "environment variable {name} is not set; it must hold the webhook's secret"
            )),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; this cannot fail.
        match Hmac::<Sha256>::new_from_slice(self.0.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => Hmac::<Sha256>::new(&Default::default()),
        }
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No `X-Plane-Signature` header.
    #[error("the delivery has no X-Plane-Signature header")]
    MissingSignature,
    /// A signature that is not the body's under the secret.
    #[error("the delivery's X-Plane-Signature does not match its body")]
    BadSignature,
    /// A signed body that is not a delivery Plane sends.
    #[error("the delivery is not a Plane webhook payload: {0}")]
    Malformed(String),
}

/// The signature Plane would send for `body`: lowercase hex HMAC-SHA256.
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks `signature` (the `X-Plane-Signature` header) against the raw
/// `body`, in constant time over the digest.
pub fn verify(
    secret: &WebhookSecret,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), WebhookError> {
    let signature = signature.ok_or(WebhookError::MissingSignature)?;
    let tag = hex(signature.trim()).ok_or(WebhookError::BadSignature)?;
    let mut mac = secret.mac();
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| WebhookError::BadSignature)
}

/// 64 hex digits as 32 bytes; anything else is `None`.
fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

/// A delivery, as much of it as a receiver reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// `event`: `issue`, `project`, `cycle`, `module`, `issue_comment`.
    pub event: String,
    /// `action`: `created`, `updated`, `deleted`.
    pub action: String,
    /// `activity.field`: what changed (`state`, `priority`, …), when said.
    pub field: Option<String>,
    /// The project of the work item (`data.project`), when said.
    pub project: Option<String>,
    /// For an `issue` event that is not a deletion, the work item as
    /// `data` has it; `None` when `data` is not a whole work item.
    pub item: Option<WorkItem>,
}

#[derive(Deserialize)]
struct Raw {
    event: String,
    action: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    activity: Option<RawActivity>,
}

#[derive(Deserialize)]
struct RawActivity {
    #[serde(default)]
    field: Option<String>,
}

/// Reads a delivery's body (verify it first).
pub fn decode(body: &[u8]) -> Result<Delivery, WebhookError> {
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let project = raw
        .data
        .get("project")
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    let item = if raw.event == "issue" && raw.action != "deleted" {
        serde_json::from_value::<WorkItem>(raw.data).ok()
    } else {
        None
    };
    Ok(Delivery {
        event: raw.event,
        action: raw.action,
        field: raw.activity.and_then(|a| a.field),
        project,
        item,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_must_be_the_whole_digest_in_hex() {
        let secret = WebhookSecret::new("s");
        let good = sign(&secret, b"body");
        assert_eq!(good.len(), 64);
        assert!(verify(&secret, b"body", Some(&good)).is_ok());
        assert!(verify(&secret, b"body", Some(&good.to_uppercase())).is_ok());
        assert_eq!(
            verify(&secret, b"body", Some(&good[..62])),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(&secret, b"body", Some(&format!("sha256={good}"))),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(&WebhookSecret::new("other"), b"body", Some(&good)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(&secret, b"body", None),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }
}
