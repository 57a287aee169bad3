//! The client's error type.

use std::time::Duration;

/// Why a call to Plane failed. Only [`PlaneError::NotFound`] says anything
/// about the resource itself; every other variant is about the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaneError {
    /// 404 "The requested resource does not exist.": the work item (or
    /// project) is deleted, archived, in intake, or never existed.
    #[error("{path}: not found")]
    NotFound {
        /// The request path.
        path: String,
    },
    /// Not a work item identifier (`ROCK-42`: letters and digits, a dash,
    /// a number); nothing was asked.
    #[error("{identifier:?} is not a work item identifier such as ROCK-42")]
    InvalidIdentifier {
        /// What was given.
        identifier: String,
    },
    /// 404 "Page not found.": the URL matched no route. A configuration
    /// fault (wrong base URL, a malformed id, an old server), never proof
    /// that a task was deleted.
    #[error("{path}: no such route on this Plane server (check base_url and the ids)")]
    RouteNotFound {
        /// The request path.
        path: String,
    },
    /// Both route families answered "Page not found." for the project:
    /// there is no Plane API at this address (a wrong `base_url`, for
    /// example one that already ends in `/api/v1`), or the project id is
    /// not a UUID.
    #[error(
        "no Plane API answers at {base_url}: both /work-items/ and /issues/ are \"Page not found.\" \
         (check plane.base_url, which is the server's address without /api/v1, and plane.project_id)"
    )]
    NoPlaneApi {
        /// The configured base URL.
        base_url: String,
    },
    /// 401: no API key was sent.
    #[error("{path}: unauthorized (no API key sent)")]
    Unauthorized {
        /// The request path.
        path: String,
    },
    /// 403: the key is invalid, or the workspace or project is wrong or not
    /// shared with the key's user.
    #[error("{path}: forbidden: {detail}")]
    Forbidden {
        /// The request path.
        path: String,
        /// Plane's message.
        detail: String,
    },
    /// 429, and retrying within the call's deadline was not possible.
    #[error("{path}: rate limited (retry after {retry_after:?})")]
    RateLimited {
        /// The request path.
        path: String,
        /// What the server's `Retry-After` asked for.
        retry_after: Option<Duration>,
    },
    /// Another 4xx: the request itself was refused (a bad state id, …).
    #[error("{path}: refused with {status}: {detail}")]
    Rejected {
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Plane's message.
        detail: String,
    },
    /// 5xx, after the retries the call allowed.
    #[error("{path}: server error {status}")]
    Server {
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// The request timed out, after the retries the call allowed.
    #[error("{path}: timed out")]
    Timeout {
        /// The request path.
        path: String,
    },
    /// The connection failed or broke.
    #[error("{path}: transport error: {detail}")]
    Transport {
        /// The request path.
        path: String,
        /// What failed.
        detail: String,
    },
    /// The body was not what Plane sends.
    #[error("{path}: undecodable response ({detail}); body starts: {excerpt:?}")]
    Decode {
        /// The request path.
        path: String,
        /// What the decoder said.
        detail: String,
        /// The first bytes of the body.
        excerpt: String,
    },
    /// The response was larger than the configured cap; it was not read.
    #[error("{path}: response larger than {limit} bytes; refused")]
    TooLarge {
        /// The request path.
        path: String,
        /// The cap.
        limit: usize,
    },
    /// The project has no state of that name.
    #[error("no state named {name:?} in the project (states: {available})")]
    UnknownState {
        /// The name asked for.
        name: String,
        /// The states there are.
        available: String,
    },
    /// The configuration is unusable.
    #[error("plane configuration: {0}")]
    Config(String),
}

impl PlaneError {
    /// Whether this error is Plane's word that the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PlaneError::NotFound { .. })
    }
}

/// The first 200 characters of a body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body.get(..400).unwrap_or(body))
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
