//! Sending one request: building its URL, pacing, the retry loop with its
//! overall deadline, and judging Plane's answer into a body or a typed error.

use std::time::{Duration, Instant};

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::PlaneClient;
use crate::PlaneError;
use crate::error::excerpt;
use crate::pacing::parse_retry_after;

/// Plane's message for an object that does not exist (DRF's `NotFound`,
/// raised for a deleted, archived or never-existing work item or project).
const OBJECT_MISSING: &str = "The requested resource does not exist.";

/// How a failed attempt goes on.
enum Attempt {
    Done(Result<Vec<u8>, PlaneError>),
    Retry {
        error: PlaneError,
        wait: Option<Duration>,
    },
}

impl PlaneClient {
    pub(super) fn url(&self, tail: &[&str], query: &[(&str, String)]) -> Url {
        let project = ["projects", self.config.project_id.as_str()];
        self.workspace_url(&[&project[..], tail].concat(), query)
    }

    /// A URL under the workspace rather than the project (a work item by
    /// its identifier).
    pub(super) fn workspace_url(&self, tail: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.extend(["api", "v1", "workspaces", &self.config.workspace]);
            segments.extend(tail);
            // Plane answers a path without its trailing slash with a 301.
            segments.push("");
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<T, PlaneError> {
        let path = url.path().to_owned();
        let bytes = self.send(method, url, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| PlaneError::Decode {
            path,
            detail: e.to_string(),
            excerpt: excerpt(&bytes),
        })
    }

    /// Sends one request with pacing, retries and an overall deadline.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Vec<u8>, PlaneError> {
        let path = url.path().to_owned();
        let deadline = Instant::now() + self.config.call_deadline;
        // A POST that may have reached the server is not repeated: a second
        // comment is worse than a missing one.
        let idempotent = method != Method::POST;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.pacer.acquire().await;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header("X-API-Key", self.config.api_key.expose())
                .timeout(self.config.request_timeout);
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    self.observe(method.as_str(), &path, response.status().as_u16());
                    self.judge(&path, response, idempotent).await
                }
                Err(e) => {
                    self.observe(method.as_str(), &path, 0);
                    let connect = e.is_connect();
                    let error = if e.is_timeout() {
                        PlaneError::Timeout { path: path.clone() }
                    } else {
                        PlaneError::Transport {
                            path: path.clone(),
                            detail: transport_detail(&e),
                        }
                    };
                    if connect || idempotent {
                        Attempt::Retry { error, wait: None }
                    } else {
                        Attempt::Done(Err(error))
                    }
                }
            };
            let (error, wait) = match outcome {
                Attempt::Done(result) => {
                    tracing::debug!(%method, path, attempt, ok = result.is_ok(), "plane request");
                    return result;
                }
                Attempt::Retry { error, wait } => (error, wait),
            };
            let wait = wait.unwrap_or_else(|| self.backoff(attempt));
            if attempt >= self.config.max_attempts || Instant::now() + wait > deadline {
                tracing::warn!(%method, path, attempt, %error, "plane request failed; giving up");
                return Err(error);
            }
            tracing::info!(%method, path, attempt, %error, wait_ms = wait.as_millis() as u64, "plane request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Exponential backoff with "equal jitter": half the exponential
    /// ceiling, plus a random share of the other half, so that a fleet of
    /// runners that failed together does not retry together, and none
    /// retries at once.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(1 << attempt.min(10))
            .min(Duration::from_secs(10));
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    async fn judge(&self, path: &str, response: reqwest::Response, idempotent: bool) -> Attempt {
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.pacer.observe(
            header("x-ratelimit-remaining").as_deref(),
            header("x-ratelimit-reset").as_deref(),
        );
        let path = path.to_owned();
        match status {
            200..=299 => Attempt::Done(self.read_body(&path, response).await),
            429 => {
                let retry_after = header("retry-after").as_deref().and_then(parse_retry_after);
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                self.pacer.pause(wait);
                Attempt::Retry {
                    error: PlaneError::RateLimited { path, retry_after },
                    wait: Some(wait),
                }
            }
            502 | 504 if idempotent => Attempt::Retry {
                error: PlaneError::Server { path, status },
                wait: None,
            },
            // 503 means the request was not processed, so even a POST may go again.
            503 => Attempt::Retry {
                error: PlaneError::Server { path, status },
                wait: None,
            },
            300..=399 => {
                let location = header("location").unwrap_or_default();
                Attempt::Done(Err(PlaneError::Rejected {
                    path,
                    status,
                    detail: format!(
                        "redirected to {location:?}; set base_url to the final address"
                    ),
                }))
            }
            400..=499 => {
                let body = match self.read_body(&path, response).await {
                    Ok(body) => body,
                    Err(e) => return Attempt::Done(Err(e)),
                };
                let detail = error_detail(&body);
                Attempt::Done(Err(match status {
                    401 => PlaneError::Unauthorized { path },
                    403 => PlaneError::Forbidden { path, detail },
                    // Only Plane's exact "object missing" body is evidence
                    // that the resource is gone. A route miss, an HTML page
                    // from a proxy, anything else: a configuration fault.
                    404 if is_object_missing(&body) => PlaneError::NotFound { path },
                    404 => PlaneError::RouteNotFound { path },
                    _ => PlaneError::Rejected {
                        path,
                        status,
                        detail,
                    },
                }))
            }
            _ => Attempt::Done(Err(PlaneError::Server { path, status })),
        }
    }

    /// Reads a body, refusing it as soon as it is known to exceed the cap.
    async fn read_body(
        &self,
        path: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, PlaneError> {
        let limit = self.config.max_response_bytes;
        let too_large = || PlaneError::TooLarge {
            path: path.to_owned(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) if e.is_timeout() => {
                    return Err(PlaneError::Timeout {
                        path: path.to_owned(),
                    });
                }
                Err(e) => {
                    return Err(PlaneError::Transport {
                        path: path.to_owned(),
                        detail: format!("the body broke off: {}", transport_detail(&e)),
                    });
                }
            }
        }
    }
}

fn transport_detail(e: &reqwest::Error) -> String {
    // reqwest's message names the URL, never headers; the chain holds the
    // cause (connection refused, reset, …).
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether a 404's body is Plane's own word that the object does not exist:
/// exactly `{"error": "The requested resource does not exist."}`. A
/// gateway's `{"error": "Not found"}`, a route miss or an HTML page is not.
fn is_object_missing(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let object = v.as_object()?;
            let error = object.get("error")?.as_str()?;
            Some(object.len() == 1 && error == OBJECT_MISSING)
        })
        .unwrap_or(false)
}

/// Plane's error message: `detail`, then `error`, then `error_message`, then
/// a 400's field map, then the raw excerpt.
fn error_detail(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return excerpt(body);
    };
    for key in ["detail", "error", "error_message"] {
        if let Some(text) = value.get(key).and_then(Value::as_str) {
            return text.to_owned();
        }
    }
    if let Some(fields) = value.as_object() {
        let parts: Vec<String> = fields
            .iter()
            .map(|(field, problems)| match problems {
                Value::Array(list) => format!(
                    "{field}: {}",
                    list.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                other => format!("{field}: {other}"),
            })
            .collect();
        if !parts.is_empty() {
            return parts.join(", ");
        }
    }
    excerpt(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details_are_read_in_plane_order() {
        assert_eq!(
            error_detail(br#"{"detail": "Given API token is not valid"}"#),
            "Given API token is not valid"
        );
        assert_eq!(
            error_detail(br#"{"error_code": 5900, "error_message": "RATE_LIMIT_EXCEEDED"}"#),
            "RATE_LIMIT_EXCEEDED"
        );
        assert_eq!(
            error_detail(br#"{"state": ["Invalid pk \"x\" - object does not exist."]}"#),
            "state: Invalid pk \"x\" - object does not exist."
        );
        assert_eq!(error_detail(b"<html>502</html>"), "<html>502</html>");
    }

    #[test]
    fn only_the_object_missing_body_means_not_found() {
        assert!(is_object_missing(
            br#"{"error":"The requested resource does not exist."}"#
        ));
        assert!(!is_object_missing(br#"{"error": "Page not found."}"#));
        assert!(!is_object_missing(b"<h1>Not Found</h1>"));
        assert!(!is_object_missing(br#"{"detail": "Not found."}"#));
        // A gateway's or proxy's JSON 404 is not Plane's word.
        assert!(!is_object_missing(br#"{"error": "Not found"}"#));
        assert!(!is_object_missing(
            br#"{"error": "The requested resource does not exist.", "path": "/x"}"#
        ));
    }
}
