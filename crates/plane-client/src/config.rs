//! How to reach a Plane project, and the secret that opens it.

use std::fmt;
use std::time::Duration;

/// A Plane API key. It never appears in `Debug`, logs or error messages;
/// only the request header sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Reads the key from the environment variable `name`. The error names
    /// the variable, never a value.
    pub fn from_env(name: &str) -> Result<Self, crate::PlaneError> {
        match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(Self(value.trim().to_owned())),
            Ok(_) => Err(crate::PlaneError::Config(format!(
                "environment variable {name} is empty; it must hold the Plane API key"
            ))),
            Err(_) => Err(crate::PlaneError::Config(format!(
                "environment variable {name} is not set; it must hold the Plane API key"
            ))),
        }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// A name for the key that says nothing about it: `plane-key:` and
    /// the first 16 hex digits of its SHA-256. What a shared budget is
    /// kept under, so several processes using one key find one budget
    /// while the store never holds the key.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("plane-key:{hex}")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Which of Plane's two route families to use for work items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteFamily {
    /// Find out on first use: `/work-items/`, falling back to `/issues/` when
    /// the server answers `Page not found.` (Plane before 1.1).
    #[default]
    Detect,
    /// `/work-items/` (Plane 1.1 and later).
    WorkItems,
    /// `/issues/` (every version; the only one before 1.1).
    Issues,
}

/// Plane's per-key request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed…
    pub requests: u32,
    /// …within any window of this length.
    pub per: Duration,
}

impl Default for RateLimit {
    /// Plane's default: 60 a minute (`API_KEY_RATE_LIMIT`).
    fn default() -> Self {
        Self {
            requests: 60,
            per: Duration::from_secs(60),
        }
    }
}

/// Everything the client needs to know.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// The server, e.g. `https://api.plane.so` or `http://127.0.0.1:8000`
    /// (the client appends `/api/v1/…`).
    pub base_url: String,
    /// The workspace slug.
    pub workspace: String,
    /// The project's UUID.
    pub project_id: String,
    /// The API key.
    pub api_key: ApiKey,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request, body included.
    pub request_timeout: Duration,
    /// Responses larger than this are refused without being read whole.
    pub max_response_bytes: usize,
    /// Attempts per call, retries included.
    pub max_attempts: u32,
    /// Time allowed for one call, retries and waits included.
    pub call_deadline: Duration,
    /// First retry delay; doubles each attempt (with jitter).
    pub backoff_base: Duration,
    /// Items per page when listing (1..=1000).
    pub page_size: u32,
    /// The key's request budget, which the client paces itself to.
    pub rate_limit: RateLimit,
    /// State names that count as terminal whatever their group
    /// (case-insensitive, trimmed).
    pub terminal_state_names: Vec<String>,
    /// Route family.
    pub routes: RouteFamily,
    /// How long the project's states and labels are trusted before they
    /// are listed again.
    pub cache_ttl: Duration,
}

impl PlaneConfig {
    /// A configuration with the defaults for everything but the server, the
    /// project and the key.
    pub fn new(
        base_url: impl Into<String>,
        workspace: impl Into<String>,
        project_id: impl Into<String>,
        api_key: ApiKey,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            workspace: workspace.into(),
            project_id: project_id.into(),
            api_key,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 16 * 1024 * 1024,
            max_attempts: 4,
            call_deadline: Duration::from_secs(120),
            backoff_base: Duration::from_millis(250),
            page_size: 1000,
            rate_limit: RateLimit::default(),
            terminal_state_names: ["Done", "Cancelled", "Cancelled by operator", "Closed"]
                .map(String::from)
                .to_vec(),
            routes: RouteFamily::Detect,
            cache_ttl: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_redacted_in_debug() {
        let config = PlaneConfig::new(
            "http://x",
            "acme",
            "p",
            ApiKey::new("plane_api_0123456789abcdef"),
        );
        let text = format!("{config:?}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn a_missing_key_variable_is_named_without_a_value() {
        let err = ApiKey::from_env("INFLIGHT_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(
            err.to_string()
                .contains("INFLIGHT_TEST_SURELY_UNSET_VARIABLE")
        );
    }
}
