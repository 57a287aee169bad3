//! inflight's configuration file: one TOML file shared by the watcher and
//! the watchdog (and read by each keeper), validated whole at start-up.
//! Every key is documented in `docs/configuration.md`; a problem is a
//! [`ConfigError`] naming the file and the key, on which the binaries exit
//! with status 2.
//!
//! Paths inside the file are relative to the file's folder. Secrets are
//! never in the file: `plane.api_key_env` (and `[ledger] password_env`,
//! `[webhook] secret_env`) name the environment variables that hold them.
//!
//! # Example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("inflight-config-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("inflight.toml");
//! std::fs::write(&path, r#"
//! [ledger]
//! path = "var/inflight.redb"
//!
//! [plane]
//! base_url = "http://127.0.0.1:8000"
//! workspace = "acme"
//! project_id = "7a9e77a8-f88a-4a02-989e-b62a535fbb98"
//!
//! [backends.local]
//! max_concurrent = 2
//! command = ["./run-task.sh"]
//!
//! [roles.goal]
//! claim_state = "Ready for AI"
//! running_state = "Running"
//! done_state = "Done"
//! blocked_state = "Blocked"
//! backend = "local"
//! "#)?;
//! let config = inflight_config::Config::load(&path)?;
//! assert_eq!(config.ledger.path, dir.join("var/inflight.redb"));
//! assert_eq!(config.roles["goal"].parallel, 1);
//! assert_eq!(config.watcher.on_stop, inflight_config::StopMode::Handover);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

mod check;
mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger_core::{Backend, BackendLimits, Limits};
use plane_client::{ApiKey, PlaneConfig, RateLimit, RouteFamily};
use serde::Deserialize;

use check::*;

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
    /// `silent_poll_secs`: how often runners look at the board while
    /// deliveries are being missed (the webhook set inactive by Plane, its
    /// receiver down), instead of `watcher.poll_interval_secs`.
    pub silent_poll: Duration,
}

/// `[http]`: the watchdog's read-only web page (`watchdog serve --http`,
/// `watchdog run --http`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpSettings {
    /// `token_env`: the environment variable holding the token every
    /// request must then carry (`Authorization: Bearer TOKEN`, or HTTP
    /// Basic with the token as the password). Required to serve on any
    /// address but loopback.
    pub token_env: Option<String>,
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
    /// `[http]`.
    pub http: HttpSettings,
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
            http: http_settings(&check, raw.http)?,
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

    /// The program `backend` runs: a relative path with a folder in it
    /// resolves against the configuration's folder; a bare name is looked
    /// up in `PATH` when the executor starts; an absolute path is itself.
    pub fn program_of(&self, backend: &BackendSettings) -> PathBuf {
        let program = Path::new(&backend.program);
        if program.components().count() > 1 && program.is_relative() {
            self.dir.join(program)
        } else {
            program.to_path_buf()
        }
    }

    /// Checks that `backend`'s program can be started, as a keeper would
    /// start it with this process's `PATH`: the file it names, or the first
    /// of that name in `PATH`, exists, is a file and is executable. The
    /// program found, or why not (naming the program).
    pub fn check_program(&self, backend: &BackendSettings) -> Result<PathBuf, String> {
        use std::os::unix::fs::PermissionsExt;
        let executable = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        };
        let program = self.program_of(backend);
        if program.components().count() > 1 {
            return match std::fs::metadata(&program) {
                Err(e) => Err(format!("{}: {e}", program.display())),
                Ok(_) if !executable(&program) => {
                    Err(format!("{}: not an executable file", program.display()))
                }
                Ok(_) => Ok(program),
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(&program))
            .find(|candidate| executable(candidate))
            .ok_or_else(|| {
                format!(
                    "{}: no executable of that name in PATH ({})",
                    program.display(),
                    path.to_string_lossy()
                )
            })
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
    /// `api_key_env`), the database's password, the webhook's secret, the
    /// web page's token. An executor's environment has none of them.
    pub fn secret_envs(&self) -> Vec<String> {
        let mut names = vec![self.plane.api_key_env.clone()];
        names.extend(self.roles.values().filter_map(|r| r.api_key_env.clone()));
        if let StoreSettings::Postgres(pg) = &self.ledger.store {
            names.extend(pg.password_env.clone());
        }
        names.extend(self.webhook.as_ref().map(|w| w.secret_env.clone()));
        names.extend(self.http.token_env.clone());
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
