//! Validation: each table of the raw file checked and turned into its
//! settings, every problem an error naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger_core::Backend;
use plane_client::RouteFamily;

use crate::raw::*;
use crate::*;

/// Names the file in every error, and checks values.
pub(crate) struct Checker {
    pub(crate) path: String,
}

impl Checker {
    pub(crate) fn error(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            key: key.to_owned(),
            message,
        }
    }

    pub(crate) fn positive(&self, key: &str, value: u64) -> Result<u64, ConfigError> {
        if value == 0 {
            Err(self.error(key, "must be greater than 0".into()))
        } else {
            Ok(value)
        }
    }
}

/// Reads the file, refuses it if every user may write it, and parses it.
pub(crate) fn read_raw(path: &Path, check: &Checker) -> Result<RawConfig, ConfigError> {
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

pub(crate) fn ledger_settings(
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
            if let Err(why) = ledger_postgres::check_url(&url) {
                return Err(check.error("ledger.url", why));
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

pub(crate) fn plane_settings(check: &Checker, p: RawPlane) -> Result<PlaneSettings, ConfigError> {
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

pub(crate) fn backend_settings(
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
        // A rate cap of 0 would refuse every start for good: a typo, or a
        // backend meant to be off (remove its roles instead).
        for (field, cap) in [
            ("max_per_hour", b.max_per_hour),
            ("max_per_day", b.max_per_day),
        ] {
            if cap == Some(0) {
                return Err(check.error(
                    &key(field),
                    "must be greater than 0 (leave it out for no cap)".into(),
                ));
            }
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

pub(crate) fn role_settings(
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

pub(crate) fn http_settings(check: &Checker, h: RawHttp) -> Result<HttpSettings, ConfigError> {
    match h.token_env {
        Some(name) if name.trim().is_empty() => Err(check.error(
            "http.token_env",
            "must name an environment variable, e.g. \"INFLIGHT_HTTP_TOKEN\"".into(),
        )),
        token_env => Ok(HttpSettings { token_env }),
    }
}

pub(crate) fn webhook_settings(
    check: &Checker,
    w: RawWebhook,
) -> Result<WebhookSettings, ConfigError> {
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
    let silent_poll = check.positive("webhook.silent_poll_secs", w.silent_poll_secs)?;
    Ok(WebhookSettings {
        listen,
        secret_env,
        max_body_bytes,
        silent_poll: Duration::from_secs(silent_poll),
    })
}

pub(crate) fn watcher_settings(
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
