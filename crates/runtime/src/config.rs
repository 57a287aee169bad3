//! The configuration file: one TOML file shared by the watcher and the
//! watchdog, validated whole at start-up. Every key is documented in
//! `docs/configuration.md`.
//!
//! Paths inside the file are relative to the file's folder. Secrets are
//! never in the file: `plane.api_key_env` names the environment variable
//! that holds the API key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger_core::{Backend, BackendLimits, Limits};
use plane_client::{ApiKey, PlaneConfig, RateLimit, RouteFamily};
use serde::Deserialize;

/// A configuration problem, naming the file and the key (or environment
/// variable) at fault. The binaries exit with status 2 on one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {key}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub path: String,
    /// The key at fault (`roles.goal.backend`), or the environment variable.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ledger: RawLedger,
    plane: RawPlane,
    #[serde(default)]
    limits: RawLimits,
    backends: BTreeMap<String, RawBackend>,
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    watcher: RawWatcher,
    #[serde(default)]
    webhook: Option<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    listen: Option<String>,
    secret_env: Option<String>,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    // A real delivery of a work item with a long description is tens of
    // kilobytes; a megabyte leaves room and stops a flood.
    1 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    #[serde(default)]
    store: Option<String>,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    lease_secs: Option<u64>,
    #[serde(default)]
    renew_secs: Option<u64>,
    #[serde(default = "default_window_hours")]
    window_hours: u64,
    #[serde(default = "default_retention_days")]
    retention_days: u64,
    #[serde(default = "default_write_deadline_secs")]
    write_deadline_secs: u64,
}

fn default_window_hours() -> u64 {
    24
}
fn default_retention_days() -> u64 {
    7
}
fn default_write_deadline_secs() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlane {
    base_url: String,
    workspace: String,
    project_id: String,
    #[serde(default = "default_api_key_env")]
    api_key_env: String,
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout_secs")]
    request_timeout_secs: u64,
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: usize,
    #[serde(default = "default_rate_limit_per_minute")]
    rate_limit_per_minute: u32,
    #[serde(default = "default_terminal_states")]
    terminal_states: Vec<String>,
    #[serde(default = "default_routes")]
    routes: String,
    #[serde(default = "default_cache_secs")]
    cache_secs: u64,
}

fn default_api_key_env() -> String {
    "PLANE_API_KEY".into()
}
// Plane's defaults are the client's own, not restated here.
fn plane_defaults() -> PlaneConfig {
    PlaneConfig::new("", "", "", ApiKey::new(""))
}
fn default_connect_timeout_secs() -> u64 {
    plane_defaults().connect_timeout.as_secs()
}
fn default_request_timeout_secs() -> u64 {
    plane_defaults().request_timeout.as_secs()
}
fn default_max_response_bytes() -> usize {
    plane_defaults().max_response_bytes
}
fn default_rate_limit_per_minute() -> u32 {
    plane_defaults().rate_limit.requests
}
fn default_terminal_states() -> Vec<String> {
    plane_defaults().terminal_state_names
}
fn default_routes() -> String {
    "auto".into()
}
fn default_cache_secs() -> u64 {
    plane_defaults().cache_ttl.as_secs()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_concurrent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    max_concurrent: u32,
    max_per_hour: Option<u32>,
    max_per_day: Option<u32>,
    command: Vec<String>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    claim_state: String,
    running_state: String,
    done_state: String,
    blocked_state: String,
    backend: String,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default = "default_parallel")]
    parallel: u32,
}

fn default_parallel() -> u32 {
    1
}

fn default_max_attempts() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatcher {
    #[serde(default)]
    poll_interval_secs: Option<u64>,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
    #[serde(default = "default_grace_secs")]
    grace_secs: u64,
    #[serde(default = "default_startup_reconcile_secs")]
    startup_reconcile_secs: u64,
    #[serde(default)]
    comment: CommentPolicy,
    #[serde(default)]
    on_stop: StopMode,
    #[serde(default = "default_drain_secs")]
    drain_secs: u64,
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

fn default_drain_secs() -> u64 {
    600
}

/// What a runner does with the executors its keepers run when it is told to
/// stop (`[watcher] on_stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopMode {
    /// Exit at once and leave every keeper and executor running, for the
    /// next runner of the role on this host to adopt (the default: a
    /// deploy's restart costs no work).
    #[default]
    Handover,
    /// Wait for the executors to end (up to `drain_secs`) and report them,
    /// then hand over what is still running.
    Drain,
    /// Stop the executors through their keepers (SIGTERM to the group, the
    /// grace period, SIGKILL), put their tasks back, then exit.
    Interrupt,
}

impl StopMode {
    /// The configuration's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Handover => "handover",
            StopMode::Drain => "drain",
            StopMode::Interrupt => "interrupt",
        }
    }
}

/// Which outcomes a runner comments on (`[watcher] comment`). A comment
/// costs one request of Plane's budget per dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommentPolicy {
    /// Every outcome (the default).
    #[default]
    Always,
    /// Only what went wrong: a failed, timed-out, interrupted or
    /// unlaunchable run, a move Plane refused, a repaired task.
    Failures,
    /// None: the state alone tells.
    Never,
}

impl CommentPolicy {
    /// Whether an outcome gets a comment; `failure` says it went wrong.
    pub fn wants(self, failure: bool) -> bool {
        match self {
            CommentPolicy::Always => true,
            CommentPolicy::Failures => failure,
            CommentPolicy::Never => false,
        }
    }
}

fn default_poll_interval_secs(webhooks: bool) -> u64 {
    // With webhooks on, the poll only catches deliveries that were lost.
    if webhooks { 300 } else { 30 }
}
fn default_lease_secs() -> u64 {
    300
}
fn default_grace_secs() -> u64 {
    10
}
fn default_startup_reconcile_secs() -> u64 {
    10
}

/// `[ledger]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    /// `store`: which store holds the ledger.
    pub store: StoreSettings,
    /// The redb ledger file, resolved against the configuration's folder
    /// (empty for the PostgreSQL store).
    pub path: PathBuf,
    /// `window_hours`: slots older than this whose owner is not known alive
    /// expire.
    pub window: Duration,
    /// `retention_days`: how long events are kept.
    pub retention: Duration,
    /// `write_deadline_secs`: how long to wait for another writer.
    pub write_deadline: Duration,
}

/// Which store holds the ledger (`[ledger] store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// `"redb"` (the default): one file, one host.
    Redb,
    /// `"postgres"`: a schema shared by the runners of several hosts.
    Postgres(PostgresSettings),
}

/// The PostgreSQL store's keys of `[ledger]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `url`: `postgresql://user@host:port/database`, without a password.
    pub url: String,
    /// `password_env`: the environment variable holding the password, if
    /// the server wants one.
    pub password_env: Option<String>,
    /// `schema` (default `inflight`).
    pub schema: String,
    /// `lease_secs` (default 45): how long a slot stays its holder's
    /// without a renewal, by the database's clock.
    pub lease: Duration,
    /// `renew_secs` (default 10): how often a runner renews its slots.
    pub renew: Duration,
}

/// `[plane]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneSettings {
    /// `base_url`.
    pub base_url: String,
    /// `workspace`.
    pub workspace: String,
    /// `project_id`.
    pub project_id: String,
    /// `api_key_env`: the environment variable holding the key.
    pub api_key_env: String,
    /// `connect_timeout_secs`.
    pub connect_timeout: Duration,
    /// `request_timeout_secs`.
    pub request_timeout: Duration,
    /// `max_response_bytes`.
    pub max_response_bytes: usize,
    /// `rate_limit_per_minute`.
    pub rate_limit_per_minute: u32,
    /// `terminal_states`.
    pub terminal_states: Vec<String>,
    /// `routes`: `auto`, `work-items` or `issues`.
    pub routes: RouteFamily,
    /// `cache_secs`: how long the project's states and labels are trusted
    /// before they are listed again; also how often a role whose state or
    /// label names do not resolve is checked again.
    pub cache: Duration,
}

/// `[backends.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// The backend's name.
    pub name: Backend,
    /// Caps.
    pub limits: BackendLimits,
    /// `command[0]`: the executor's program, run without a shell.
    pub program: String,
    /// `command[1..]`: its arguments.
    pub args: Vec<String>,
    /// `timeout_secs`.
    pub timeout: Duration,
}

/// `[roles.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSettings {
    /// The role's name.
    pub name: String,
    /// `claim_state`: where the role takes tasks from.
    pub claim_state: String,
    /// `running_state`: where a task is while it runs.
    pub running_state: String,
    /// `done_state`: after exit 0.
    pub done_state: String,
    /// `blocked_state`: after a failure, a timeout, or `max_attempts` lost
    /// attempts.
    pub blocked_state: String,
    /// `backend`.
    pub backend: Backend,
    /// `labels`: only tasks carrying all of these.
    pub labels: Vec<String>,
    /// `max_attempts`.
    pub max_attempts: u32,
    /// `api_key_env`: the environment variable holding this role's own
    /// Plane key (`None`: `plane.api_key_env`'s). Each key has a budget of
    /// its own.
    pub api_key_env: Option<String>,
    /// `parallel`: how many dispatches one runner of the role holds at
    /// once (each admitted against the caps).
    pub parallel: u32,
}

/// `[webhook]`: Plane's deliveries, received by `watchdog run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// `listen`: the address `watchdog run` accepts deliveries on.
    pub listen: std::net::SocketAddr,
    /// `secret_env`: the environment variable holding the webhook's
    /// secret (Plane's `secret_key`, `plane_wh_…`).
    pub secret_env: String,
    /// `max_body_bytes`: a larger delivery is refused with 413.
    pub max_body_bytes: usize,
}

/// `[watcher]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherSettings {
    /// `poll_interval_secs`.
    pub poll_interval: Duration,
    /// `lease_secs`.
    pub lease: Duration,
    /// `grace_secs`: between SIGTERM and SIGKILL of an executor.
    pub grace: Duration,
    /// `startup_reconcile_secs`: the start-up sweep's time bound.
    pub startup_reconcile: Duration,
    /// `comment`: which outcomes are commented on.
    pub comment: CommentPolicy,
    /// `on_stop`: what a runner told to stop does with running executors.
    pub on_stop: StopMode,
    /// `drain_secs`: with `on_stop = "drain"`, how long a stopping runner
    /// waits for its executors before it hands the rest over.
    pub drain: Duration,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The folder relative paths resolve against.
    pub dir: PathBuf,
    /// `[ledger]`.
    pub ledger: LedgerSettings,
    /// `[plane]`.
    pub plane: PlaneSettings,
    /// `[limits] max_concurrent`: the global cap.
    pub global_max_concurrent: Option<u32>,
    /// `[backends.*]`.
    pub backends: BTreeMap<String, BackendSettings>,
    /// `[roles.*]`.
    pub roles: BTreeMap<String, RoleSettings>,
    /// `[watcher]`.
    pub watcher: WatcherSettings,
    /// `[webhook]`, when deliveries are received.
    pub webhook: Option<WebhookSettings>,
}

impl Config {
    /// Reads and validates the file at `path`: the file itself, then each
    /// table in turn. The first problem found is the error.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let check = Checker {
            path: path.display().to_string(),
        };
        let raw = read_raw(path, &check)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let ledger = ledger_settings(&check, raw.ledger, &dir)?;
        let plane = plane_settings(&check, raw.plane)?;
        let backends = backend_settings(&check, raw.backends)?;
        let roles = role_settings(&check, raw.roles, &backends)?;
        let webhook = raw
            .webhook
            .map(|w| webhook_settings(&check, w))
            .transpose()?;
        let watcher = watcher_settings(&check, raw.watcher, webhook.is_some())?;
        // A runner cut off from the database stops its executors (SIGTERM,
        // the grace period, SIGKILL) before its lease runs out: the lease
        // must leave room for a missed renewal and that stop.
        if let StoreSettings::Postgres(pg) = &ledger.store {
            let needed = pg.renew + watcher.grace + Duration::from_secs(2);
            if pg.lease <= needed {
                return Err(check.error(
                    "ledger.lease_secs",
                    format!(
                        "must exceed renew_secs + watcher.grace_secs + 2 ({} s)",
                        needed.as_secs()
                    ),
                ));
            }
        }
        if raw.limits.max_concurrent == Some(0) {
            return Err(check.error("limits.max_concurrent", "must be greater than 0".into()));
        }
        Ok(Config {
            path: path.to_path_buf(),
            dir,
            ledger,
            plane,
            global_max_concurrent: raw.limits.max_concurrent,
            backends,
            roles,
            watcher,
            webhook,
        })
    }

    /// The caps an admission to `backend` is checked against.
    pub fn limits_for(&self, backend: &Backend) -> Option<Limits> {
        self.backends.get(backend.as_str()).map(|b| Limits {
            global_max_concurrent: self.global_max_concurrent,
            backend: b.limits,
        })
    }

    /// The role named `name`, or an error listing the roles there are.
    pub fn role(&self, name: &str) -> Result<&RoleSettings, ConfigError> {
        self.roles.get(name).ok_or_else(|| ConfigError {
            path: self.path.display().to_string(),
            key: "--role".into(),
            message: format!(
                "no role named {name:?} (roles: {})",
                self.roles
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// How long a slot stays its holder's without a renewal: the PostgreSQL
    /// store's `ledger.lease_secs`, else `watcher.lease_secs`.
    pub fn lease(&self) -> Duration {
        match &self.ledger.store {
            StoreSettings::Postgres(pg) => pg.lease,
            StoreSettings::Redb => self.watcher.lease,
        }
    }

    /// How often a runner renews its slots' leases: the PostgreSQL store's
    /// `ledger.renew_secs`, else a third of the lease.
    pub fn renew_interval(&self) -> Duration {
        match &self.ledger.store {
            StoreSettings::Postgres(pg) => pg.renew,
            StoreSettings::Redb => self.watcher.lease / 3,
        }
    }

    /// The role named `name` and the backend it runs on.
    pub fn role_and_backend(
        &self,
        name: &str,
    ) -> Result<(&RoleSettings, &BackendSettings), ConfigError> {
        let role = self.role(name)?;
        // Loading checked that every role names a backend there is; a
        // `Config` built by hand gets an error, not a panic.
        let backend = self
            .backends
            .get(role.backend.as_str())
            .ok_or_else(|| ConfigError {
                path: self.path.display().to_string(),
                key: format!("roles.{name}.backend"),
                message: format!("no backend named {:?}", role.backend.as_str()),
            })?;
        Ok((role, backend))
    }

    /// The Plane project this configuration claims from.
    pub fn project(&self) -> ledger_core::ProjectRef {
        ledger_core::ProjectRef {
            workspace: self.plane.workspace.clone(),
            project_id: self.plane.project_id.clone(),
        }
    }

    /// Every environment variable this configuration reads a secret
    /// from: Plane's keys (`plane.api_key_env`, each role's
    /// `api_key_env`), the database's password, the webhook's secret. An
    /// executor's environment has none of them.
    pub fn secret_envs(&self) -> Vec<String> {
        let mut names = vec![self.plane.api_key_env.clone()];
        names.extend(self.roles.values().filter_map(|r| r.api_key_env.clone()));
        if let StoreSettings::Postgres(pg) = &self.ledger.store {
            names.extend(pg.password_env.clone());
        }
        names.extend(self.webhook.as_ref().map(|w| w.secret_env.clone()));
        names.sort();
        names.dedup();
        names
    }

    /// The Plane client's configuration, with the API key read from the
    /// environment variable `plane.api_key_env`.
    pub fn plane_config(&self) -> Result<PlaneConfig, ConfigError> {
        self.plane_config_with(&self.plane.api_key_env, "plane.api_key_env")
    }

    /// The Plane client's configuration for `role`: its own key when it
    /// names one (`roles.NAME.api_key_env`), else `plane.api_key_env`'s.
    pub fn plane_config_for(&self, role: &RoleSettings) -> Result<PlaneConfig, ConfigError> {
        match &role.api_key_env {
            Some(env) => self.plane_config_with(env, &format!("roles.{}.api_key_env", role.name)),
            None => self.plane_config(),
        }
    }

    fn plane_config_with(&self, env: &str, key_name: &str) -> Result<PlaneConfig, ConfigError> {
        // The client's own reader tells an unset variable from an empty
        // one, and never shows a value.
        let key = ApiKey::from_env(env).map_err(|e| ConfigError {
            path: self.path.display().to_string(),
            key: key_name.into(),
            message: match e {
                plane_client::PlaneError::Config(message) => message,
                other => other.to_string(),
            },
        })?;
        let mut config = PlaneConfig::new(
            &self.plane.base_url,
            &self.plane.workspace,
            &self.plane.project_id,
            key,
        );
        config.connect_timeout = self.plane.connect_timeout;
        config.request_timeout = self.plane.request_timeout;
        config.max_response_bytes = self.plane.max_response_bytes;
        config.rate_limit = RateLimit {
            requests: self.plane.rate_limit_per_minute,
            per: Duration::from_secs(60),
        };
        config.terminal_state_names = self.plane.terminal_states.clone();
        config.routes = self.plane.routes;
        config.cache_ttl = self.plane.cache;
        Ok(config)
    }
}

/// Names the file in every error, and checks values.
struct Checker {
    path: String,
}

impl Checker {
    fn error(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            key: key.to_owned(),
            message,
        }
    }

    fn positive(&self, key: &str, value: u64) -> Result<u64, ConfigError> {
        if value == 0 {
            Err(self.error(key, "must be greater than 0".into()))
        } else {
            Ok(value)
        }
    }
}

/// Reads the file, refuses it if every user may write it, and parses it.
fn read_raw(path: &Path, check: &Checker) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| check.error("(file)", format!("cannot read: {e}")))?;
    // The file names the commands the runner executes: if anyone may
    // write it, anyone may run code as the runner.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| check.error("(file)", format!("cannot read: {e}")))?
            .permissions()
            .mode();
        if mode & 0o002 != 0 {
            return Err(check.error(
                "(file)",
                format!(
                    "is writable by every user (mode {:o}), so anyone could choose the commands it runs; \
                     run `chmod o-w {}`",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    let raw: RawConfig = toml::from_str(&text).map_err(|e| {
        // toml names the line and the offending key or value.
        check.error("(syntax)", e.to_string().trim_end().replace('\n', "\n    "))
    })?;
    Ok(raw)
}

fn ledger_settings(
    check: &Checker,
    raw: RawLedger,
    dir: &Path,
) -> Result<LedgerSettings, ConfigError> {
    let only = |key: &str, given: bool, store: &str| {
        if given {
            Err(check.error(
                &format!("ledger.{key}"),
                format!("is only for store = \"{store}\""),
            ))
        } else {
            Ok(())
        }
    };
    let (store, path) = match raw.store.as_deref().unwrap_or("redb") {
        "redb" => {
            for (key, given) in [
                ("url", raw.url.is_some()),
                ("password_env", raw.password_env.is_some()),
                ("schema", raw.schema.is_some()),
                ("lease_secs", raw.lease_secs.is_some()),
                ("renew_secs", raw.renew_secs.is_some()),
            ] {
                only(key, given, "postgres")?;
            }
            let Some(path) = raw.path else {
                return Err(check.error(
                    "ledger.path",
                    "is required for the redb store, e.g. \"var/inflight.redb\"".into(),
                ));
            };
            (StoreSettings::Redb, dir.join(path))
        }
        "postgres" => {
            only("path", raw.path.is_some(), "redb")?;
            let Some(url) = raw.url.filter(|u| !u.trim().is_empty()) else {
                return Err(check.error(
                    "ledger.url",
                    "is required for the postgres store, e.g. \"postgresql://inflight@db.example:5432/inflight\"".into(),
                ));
            };
            if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                return Err(check.error("ledger.url", "must be a postgresql:// URL".into()));
            }
            let schema = raw.schema.unwrap_or_else(|| "inflight".into());
            if !ledger_postgres::valid_schema(&schema) {
                return Err(check.error(
                    "ledger.schema",
                    format!("{schema:?}: use lower-case letters, digits and underscores, starting with a letter"),
                ));
            }
            let lease = check.positive("ledger.lease_secs", raw.lease_secs.unwrap_or(45))?;
            let renew = check.positive("ledger.renew_secs", raw.renew_secs.unwrap_or(10))?;
            // One lost renewal must not cost the lease.
            if renew.saturating_mul(2) > lease {
                return Err(check.error(
                    "ledger.renew_secs",
                    format!("must be at most half of lease_secs ({lease})"),
                ));
            }
            if let Some(name) = raw.password_env.as_deref()
                && name.trim().is_empty()
            {
                return Err(check.error("ledger.password_env", "must not be empty".into()));
            }
            let postgres = PostgresSettings {
                url,
                password_env: raw.password_env,
                schema,
                lease: Duration::from_secs(lease),
                renew: Duration::from_secs(renew),
            };
            (StoreSettings::Postgres(postgres), PathBuf::new())
        }
        other => {
            return Err(check.error(
                "ledger.store",
                format!("{other:?} is not one of \"redb\", \"postgres\""),
            ));
        }
    };
    let ledger = LedgerSettings {
        store,
        path,
        window: Duration::from_secs(
            check.positive("ledger.window_hours", raw.window_hours)? * 3600,
        ),
        retention: Duration::from_secs(
            check.positive("ledger.retention_days", raw.retention_days)? * 86_400,
        ),
        write_deadline: Duration::from_secs(
            check.positive("ledger.write_deadline_secs", raw.write_deadline_secs)?,
        ),
    };
    Ok(ledger)
}

fn plane_settings(check: &Checker, p: RawPlane) -> Result<PlaneSettings, ConfigError> {
    if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
        return Err(check.error(
            "plane.base_url",
            format!("{:?} must start with http:// or https://", p.base_url),
        ));
    }
    for (key, value) in [
        ("plane.workspace", &p.workspace),
        ("plane.project_id", &p.project_id),
        ("plane.api_key_env", &p.api_key_env),
    ] {
        if value.trim().is_empty() {
            return Err(check.error(key, "must not be empty".into()));
        }
    }
    let routes = match p.routes.as_str() {
        "auto" => RouteFamily::Detect,
        "work-items" => RouteFamily::WorkItems,
        "issues" => RouteFamily::Issues,
        other => {
            return Err(check.error(
                "plane.routes",
                format!("{other:?} is not one of auto, work-items, issues"),
            ));
        }
    };
    let plane = PlaneSettings {
        base_url: p.base_url,
        workspace: p.workspace,
        project_id: p.project_id,
        api_key_env: p.api_key_env,
        connect_timeout: Duration::from_secs(
            check.positive("plane.connect_timeout_secs", p.connect_timeout_secs)?,
        ),
        request_timeout: Duration::from_secs(
            check.positive("plane.request_timeout_secs", p.request_timeout_secs)?,
        ),
        max_response_bytes: check
            .positive("plane.max_response_bytes", p.max_response_bytes as u64)?
            as usize,
        rate_limit_per_minute: check.positive(
            "plane.rate_limit_per_minute",
            u64::from(p.rate_limit_per_minute),
        )? as u32,
        terminal_states: p.terminal_states,
        routes,
        cache: Duration::from_secs(check.positive("plane.cache_secs", p.cache_secs)?),
    };
    Ok(plane)
}

fn backend_settings(
    check: &Checker,
    raw: BTreeMap<String, RawBackend>,
) -> Result<BTreeMap<String, BackendSettings>, ConfigError> {
    if raw.is_empty() {
        return Err(check.error(
            "backends",
            "at least one [backends.NAME] table is needed".into(),
        ));
    }
    let mut backends = BTreeMap::new();
    for (name, b) in raw {
        let key = |field: &str| format!("backends.{name}.{field}");
        let backend = Backend::new(name.clone())
            .map_err(|e| check.error(&format!("backends.{name}"), e.to_string()))?;
        if b.max_concurrent == 0 {
            return Err(check.error(&key("max_concurrent"), "must be greater than 0".into()));
        }
        let Some((program, args)) = b
            .command
            .split_first()
            .filter(|(program, _)| !program.trim().is_empty())
        else {
            return Err(check.error(
                &key("command"),
                "must name a program, e.g. [\"./run-task.sh\"]".into(),
            ));
        };
        let timeout = Duration::from_secs(check.positive(&key("timeout_secs"), b.timeout_secs)?);
        backends.insert(
            name,
            BackendSettings {
                name: backend,
                limits: BackendLimits {
                    max_concurrent: b.max_concurrent,
                    max_per_hour: b.max_per_hour,
                    max_per_day: b.max_per_day,
                },
                program: program.clone(),
                args: args.to_vec(),
                timeout,
            },
        );
    }
    Ok(backends)
}

fn role_settings(
    check: &Checker,
    raw: BTreeMap<String, RawRole>,
    backends: &BTreeMap<String, BackendSettings>,
) -> Result<BTreeMap<String, RoleSettings>, ConfigError> {
    if raw.is_empty() {
        return Err(check.error("roles", "at least one [roles.NAME] table is needed".into()));
    }
    let mut roles = BTreeMap::new();
    for (name, r) in raw {
        let key = |field: &str| format!("roles.{name}.{field}");
        let Some(backend) = backends.get(&r.backend) else {
            let known: Vec<&str> = backends.keys().map(String::as_str).collect();
            return Err(check.error(
                &key("backend"),
                format!(
                    "backend {:?} is not defined (defined: {})",
                    r.backend,
                    known.join(", ")
                ),
            ));
        };
        for (field, value) in [
            ("claim_state", &r.claim_state),
            ("running_state", &r.running_state),
            ("done_state", &r.done_state),
            ("blocked_state", &r.blocked_state),
        ] {
            if value.trim().is_empty() {
                return Err(check.error(&key(field), "must name a Plane state".into()));
            }
        }
        if plane_client::same_name(&r.claim_state, &r.running_state) {
            return Err(check.error(&key("running_state"), "must differ from claim_state".into()));
        }
        if r.max_attempts == 0 {
            return Err(check.error(&key("max_attempts"), "must be greater than 0".into()));
        }
        if r.parallel == 0 {
            return Err(check.error(&key("parallel"), "must be greater than 0".into()));
        }
        let api_key_env = match r.api_key_env {
            Some(name) if name.trim().is_empty() => {
                return Err(check.error(&key("api_key_env"), "must not be empty".into()));
            }
            other => other,
        };
        roles.insert(
            name.clone(),
            RoleSettings {
                name,
                claim_state: r.claim_state,
                running_state: r.running_state,
                done_state: r.done_state,
                blocked_state: r.blocked_state,
                backend: backend.name.clone(),
                labels: r.labels,
                max_attempts: r.max_attempts,
                api_key_env,
                parallel: r.parallel,
            },
        );
    }
    Ok(roles)
}

fn webhook_settings(check: &Checker, w: RawWebhook) -> Result<WebhookSettings, ConfigError> {
    let Some(listen) = w.listen else {
        return Err(check.error(
            "webhook.listen",
            "is required with [webhook], e.g. \"127.0.0.1:8099\"".into(),
        ));
    };
    let listen = listen.parse().map_err(|_| {
        check.error(
            "webhook.listen",
            format!("{listen:?} is not an address and port, e.g. \"127.0.0.1:8099\""),
        )
    })?;
    let Some(secret_env) = w.secret_env.filter(|s| !s.trim().is_empty()) else {
        return Err(check.error(
            "webhook.secret_env",
            "is required with [webhook]: the environment variable holding the webhook's secret"
                .into(),
        ));
    };
    let max_body_bytes =
        check.positive("webhook.max_body_bytes", w.max_body_bytes as u64)? as usize;
    Ok(WebhookSettings {
        listen,
        secret_env,
        max_body_bytes,
    })
}

fn watcher_settings(
    check: &Checker,
    w: RawWatcher,
    webhooks: bool,
) -> Result<WatcherSettings, ConfigError> {
    let poll = w
        .poll_interval_secs
        .unwrap_or_else(|| default_poll_interval_secs(webhooks));
    let watcher = WatcherSettings {
        poll_interval: Duration::from_secs(check.positive("watcher.poll_interval_secs", poll)?),
        lease: Duration::from_secs(check.positive("watcher.lease_secs", w.lease_secs)?),
        grace: Duration::from_secs(w.grace_secs),
        startup_reconcile: Duration::from_secs(
            check.positive("watcher.startup_reconcile_secs", w.startup_reconcile_secs)?,
        ),
        comment: w.comment,
        on_stop: w.on_stop,
        drain: Duration::from_secs(w.drain_secs),
    };
    Ok(watcher)
}
