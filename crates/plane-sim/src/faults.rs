//! Faults the simulator can inject, to test a client against the failures a
//! real Plane (and the proxies in front of it) produce.

use std::time::Duration;

/// One kind of failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally, after this delay.
    Latency(Duration),
    /// Answer with this status: 500 with Plane's JSON error body, other
    /// statuses with an HTML page as a proxy would send.
    Status(u16),
    /// Answer 429 with `Retry-After: secs` and Plane's 429 body.
    RateLimited {
        /// The `Retry-After` value.
        retry_after_secs: u64,
    },
    /// Send the headers and the start of the body, then cut the connection.
    ConnectionReset,
    /// Never answer.
    Hang,
    /// Answer normally, but dribble the body out in small chunks with this
    /// delay between them.
    SlowBody(Duration),
    /// Answer 200 with a body of this many bytes, sent chunked (no
    /// `Content-Length`), generated as it is sent.
    Oversized(usize),
    /// Answer 200 with JSON cut off half-way.
    Malformed,
    /// Every project route answers 403, as when the key's user lost access.
    ProjectForbidden,
    /// Answer with this status and this JSON body, as a gateway or proxy
    /// in front of Plane may (`404 {"error": "Not found"}`).
    Json {
        /// The status.
        status: u16,
        /// The body, sent as `application/json`.
        body: String,
    },
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub(crate) fault: Fault,
    pub(crate) path_contains: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) remaining: Option<u32>,
}

impl FaultRule {
    /// `fault` for every request, until cleared.
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            path_contains: None,
            method: None,
            remaining: None,
        }
    }

    /// Only for the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Only for requests whose path contains `fragment`.
    pub fn on_path(mut self, fragment: impl Into<String>) -> Self {
        self.path_contains = Some(fragment.into());
        self
    }

    /// Only for requests with this method (`GET`, `PATCH`, …).
    pub fn on_method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into().to_ascii_uppercase());
        self
    }

    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining != Some(0)
            && self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|f| path.contains(f))
    }
}
