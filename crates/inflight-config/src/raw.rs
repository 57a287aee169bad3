//! The file's shapes as TOML gives them, with their defaults: what
//! `check` turns into the validated settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use plane_client::{ApiKey, PlaneConfig};
use serde::Deserialize;

use crate::{CommentPolicy, StopMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) ledger: RawLedger,
    pub(crate) plane: RawPlane,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    pub(crate) backends: BTreeMap<String, RawBackend>,
    pub(crate) roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    pub(crate) watcher: RawWatcher,
    #[serde(default)]
    pub(crate) webhook: Option<RawWebhook>,
    #[serde(default)]
    pub(crate) http: RawHttp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) listen: Option<String>,
    pub(crate) secret_env: Option<String>,
    #[serde(default = "default_max_body_bytes")]
    pub(crate) max_body_bytes: usize,
    #[serde(default = "default_silent_poll_secs")]
    pub(crate) silent_poll_secs: u64,
}

pub(crate) fn default_silent_poll_secs() -> u64 {
    // The poll without webhooks.
    default_poll_interval_secs(false)
}

pub(crate) fn default_max_body_bytes() -> usize {
    // A real delivery of a work item with a long description is tens of
    // kilobytes; a megabyte leaves room and stops a flood.
    1 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLedger {
    #[serde(default)]
    pub(crate) store: Option<String>,
    #[serde(default)]
    pub(crate) path: Option<PathBuf>,
    #[serde(default)]
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) password_env: Option<String>,
    #[serde(default)]
    pub(crate) schema: Option<String>,
    #[serde(default)]
    pub(crate) lease_secs: Option<u64>,
    #[serde(default)]
    pub(crate) renew_secs: Option<u64>,
    #[serde(default = "default_window_hours")]
    pub(crate) window_hours: u64,
    #[serde(default = "default_retention_days")]
    pub(crate) retention_days: u64,
    #[serde(default = "default_write_deadline_secs")]
    pub(crate) write_deadline_secs: u64,
}

pub(crate) fn default_window_hours() -> u64 {
    24
}
pub(crate) fn default_retention_days() -> u64 {
    7
}
pub(crate) fn default_write_deadline_secs() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlane {
    pub(crate) base_url: String,
    pub(crate) workspace: String,
    pub(crate) project_id: String,
    #[serde(default = "default_api_key_env")]
    pub(crate) api_key_env: String,
    #[serde(default = "default_connect_timeout_secs")]
    pub(crate) connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout_secs")]
    pub(crate) request_timeout_secs: u64,
    #[serde(default = "default_max_response_bytes")]
    pub(crate) max_response_bytes: usize,
    #[serde(default = "default_rate_limit_per_minute")]
    pub(crate) rate_limit_per_minute: u32,
    #[serde(default = "default_terminal_states")]
    pub(crate) terminal_states: Vec<String>,
    #[serde(default = "default_routes")]
    pub(crate) routes: String,
    #[serde(default = "default_cache_secs")]
    pub(crate) cache_secs: u64,
}

pub(crate) fn default_api_key_env() -> String {
    "PLANE_API_KEY".into()
}
// Plane's defaults are the client's own, not restated here.
pub(crate) fn plane_defaults() -> PlaneConfig {
    PlaneConfig::new("", "", "", ApiKey::new(""))
}
pub(crate) fn default_connect_timeout_secs() -> u64 {
    plane_defaults().connect_timeout.as_secs()
}
pub(crate) fn default_request_timeout_secs() -> u64 {
    plane_defaults().request_timeout.as_secs()
}
pub(crate) fn default_max_response_bytes() -> usize {
    plane_defaults().max_response_bytes
}
pub(crate) fn default_rate_limit_per_minute() -> u32 {
    plane_defaults().rate_limit.requests
}
pub(crate) fn default_terminal_states() -> Vec<String> {
    plane_defaults().terminal_state_names
}
pub(crate) fn default_routes() -> String {
    "auto".into()
}
pub(crate) fn default_cache_secs() -> u64 {
    plane_defaults().cache_ttl.as_secs()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) max_concurrent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub(crate) max_concurrent: u32,
    pub(crate) max_per_hour: Option<u32>,
    pub(crate) max_per_day: Option<u32>,
    pub(crate) command: Vec<String>,
    #[serde(default = "default_timeout_secs")]
    pub(crate) timeout_secs: u64,
}

pub(crate) fn default_timeout_secs() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    pub(crate) claim_state: String,
    pub(crate) running_state: String,
    pub(crate) done_state: String,
    pub(crate) blocked_state: String,
    pub(crate) backend: String,
    #[serde(default)]
    pub(crate) labels: Vec<String>,
    #[serde(default = "default_max_attempts")]
    pub(crate) max_attempts: u32,
    #[serde(default)]
    pub(crate) api_key_env: Option<String>,
    #[serde(default = "default_parallel")]
    pub(crate) parallel: u32,
}

pub(crate) fn default_parallel() -> u32 {
    1
}

pub(crate) fn default_max_attempts() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWatcher {
    #[serde(default)]
    pub(crate) poll_interval_secs: Option<u64>,
    #[serde(default = "default_lease_secs")]
    pub(crate) lease_secs: u64,
    #[serde(default = "default_grace_secs")]
    pub(crate) grace_secs: u64,
    #[serde(default = "default_startup_reconcile_secs")]
    pub(crate) startup_reconcile_secs: u64,
    #[serde(default)]
    pub(crate) comment: CommentPolicy,
    #[serde(default)]
    pub(crate) on_stop: StopMode,
    #[serde(default = "default_drain_secs")]
    pub(crate) drain_secs: u64,
}

impl Default for RawWatcher {
    fn default() -> Self {
        Self {
            poll_interval_secs: None,
            lease_secs: default_lease_secs(),
            grace_secs: default_grace_secs(),
            startup_reconcile_secs: default_startup_reconcile_secs(),
            comment: CommentPolicy::default(),
            on_stop: StopMode::default(),
            drain_secs: default_drain_secs(),
        }
    }
}

pub(crate) fn default_drain_secs() -> u64 {
    600
}

pub(crate) fn default_poll_interval_secs(webhooks: bool) -> u64 {
    // With webhooks on, the poll only catches deliveries that were lost.
    if webhooks { 300 } else { 30 }
}
pub(crate) fn default_lease_secs() -> u64 {
    300
}
pub(crate) fn default_grace_secs() -> u64 {
    10
}
pub(crate) fn default_startup_reconcile_secs() -> u64 {
    10
}
