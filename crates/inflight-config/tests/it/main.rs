//! The configuration file: defaults, relative paths, and an error naming the
//! key for each kind of mistake.

use std::path::PathBuf;
use std::time::Duration;

use inflight_config::{Config, ConfigError};

const VALID: &str = r#"
[ledger]
path = "var/inflight.redb"

[plane]
base_url = "http://127.0.0.1:8000"
workspace = "acme"
project_id = "7a9e77a8-f88a-4a02-989e-b62a535fbb98"
api_key_env = "INFLIGHT_TEST_KEY_FOR_CONFIG"

[limits]
max_concurrent = 4

[backends.local]
max_concurrent = 2
max_per_hour = 60
command = ["sh", "-c", "./run-task.sh"]

[roles.goal]
claim_state = "Ready for AI"
running_state = "Running"
done_state = "Done"
blocked_state = "Blocked"
backend = "local"
"#;

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inflight.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn error_for(text: &str) -> ConfigError {
    let (_dir, path) = write(text);
    Config::load(&path).expect_err("an invalid configuration was accepted")
}

#[test]
fn a_valid_file_loads_with_defaults_and_relative_paths() {
    let (dir, path) = write(VALID);
    let config = Config::load(&path).unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(config.ledger.path, dir.join("var/inflight.redb"));
    assert_eq!(config.ledger.window, Duration::from_secs(24 * 3600));
    assert_eq!(config.ledger.retention, Duration::from_secs(7 * 86_400));
    let role = config.role("goal").unwrap();
    assert_eq!((role.max_attempts, role.labels.len()), (3, 0));
    assert_eq!(config.watcher.poll_interval, Duration::from_secs(30));
    assert_eq!(config.backends["local"].timeout, Duration::from_secs(3600));
    let limits = config.limits_for(&role.backend).unwrap();
    assert_eq!(
        (limits.global_max_concurrent, limits.backend.max_per_day),
        (Some(4), None)
    );
    assert_eq!(
        config.plane.terminal_states,
        ["Done", "Cancelled", "Cancelled by operator", "Closed"]
    );
}

#[test]
fn an_unknown_key_is_named() {
    let err = error_for(&VALID.replace("max_per_hour = 60", "max_per_hour = 60\nmax_per_week = 9"));
    assert!(err.to_string().contains("max_per_week"), "{err}");
}

#[test]
fn a_wrong_type_is_named() {
    let err = error_for(&VALID.replace("max_concurrent = 2", "max_concurrent = \"two\""));
    let text = err.to_string();
    assert!(
        text.contains("max_concurrent") && text.contains("\"two\""),
        "{text}"
    );
}

#[test]
fn a_role_naming_an_undefined_backend_is_named() {
    let err = error_for(&VALID.replace("backend = \"local\"", "backend = \"gpu\""));
    assert_eq!(err.key, "roles.goal.backend");
    assert!(
        err.message.contains("\"gpu\"") && err.message.contains("local"),
        "{err}"
    );
}

#[test]
fn missing_sections_and_bad_values_are_named() {
    let err = error_for(&VALID.replace(
        "[limits]\nmax_concurrent = 4",
        "[limits]\nmax_concurrent = 0",
    ));
    assert_eq!(err.key, "limits.max_concurrent");
    let err = error_for(&VALID.replace("max_per_hour = 60", "max_per_hour = 0"));
    assert_eq!(err.key, "backends.local.max_per_hour");
    let err = error_for(&VALID.replace("max_per_hour = 60", "max_per_day = 0"));
    assert_eq!(err.key, "backends.local.max_per_day");
    let err = error_for(&VALID.replace(
        "command = [\"sh\", \"-c\", \"./run-task.sh\"]",
        "command = []",
    ));
    assert_eq!(err.key, "backends.local.command");
    let err = error_for(&VALID.replace(
        "base_url = \"http://127.0.0.1:8000\"",
        "base_url = \"127.0.0.1:8000\"",
    ));
    assert_eq!(err.key, "plane.base_url");
    let err = error_for(&VALID.replace(
        "running_state = \"Running\"",
        "running_state = \"ready for ai\"",
    ));
    assert_eq!(err.key, "roles.goal.running_state");
    let err = error_for("[ledger]\npath = \"x\"\n");
    assert!(err.to_string().contains("plane"), "{err}");
    let (_dir, path) = write(VALID);
    let err = Config::load(&path.with_file_name("missing.toml")).unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[test]
fn a_missing_api_key_variable_is_named_and_only_when_plane_is_needed() {
    let (_dir, path) =
        write(&VALID.replace("INFLIGHT_TEST_KEY_FOR_CONFIG", "INFLIGHT_TEST_SURELY_UNSET"));
    let config = Config::load(&path).unwrap();
    let err = config.plane_config().unwrap_err();
    assert_eq!(err.key, "plane.api_key_env");
    assert!(err.message.contains("INFLIGHT_TEST_SURELY_UNSET"), "{err}");
    let err = config.role("review").unwrap_err();
    assert!(err.message.contains("goal"), "{err}");
}

#[test]
fn a_world_writable_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = write(VALID);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(
        err.message.contains("writable by every user") && err.message.contains("chmod o-w"),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(Config::load(&path).is_ok());
}

#[test]
fn the_postgres_store_has_its_keys_and_defaults() {
    let postgres = VALID.replace(
        "path = \"var/inflight.redb\"",
        "store = \"postgres\"\nurl = \"postgresql://inflight@db.example:5432/inflight\"\npassword_env = \"INFLIGHT_DB_PASSWORD\"",
    );
    let (_dir, path) = write(&postgres);
    let config = Config::load(&path).unwrap();
    let inflight_config::StoreSettings::Postgres(pg) = &config.ledger.store else {
        panic!("expected the postgres store, got {:?}", config.ledger.store);
    };
    assert_eq!(pg.url, "postgresql://inflight@db.example:5432/inflight");
    assert_eq!(pg.password_env.as_deref(), Some("INFLIGHT_DB_PASSWORD"));
    assert_eq!(pg.schema, "inflight");
    assert_eq!(
        (pg.lease, pg.renew),
        (Duration::from_secs(45), Duration::from_secs(10))
    );
    assert_eq!(config.lease(), Duration::from_secs(45));
    assert_eq!(config.renew_interval(), Duration::from_secs(10));

    // redb stays the default, and its lease is the watcher's.
    let (_dir, path) = write(VALID);
    let config = Config::load(&path).unwrap();
    assert_eq!(config.ledger.store, inflight_config::StoreSettings::Redb);
    assert_eq!(config.renew_interval(), config.watcher.lease / 3);

    for (change, key) in [
        (
            ("store = \"postgres\"", "store = \"sqlite\""),
            "ledger.store",
        ),
        (
            (
                "url = \"postgresql://inflight@db.example:5432/inflight\"",
                "",
            ),
            "ledger.url",
        ),
        (
            (
                "url = \"postgresql://inflight@db.example:5432/inflight\"",
                "url = \"mysql://db/x\"",
            ),
            "ledger.url",
        ),
        (
            (
                "store = \"postgres\"",
                "store = \"postgres\"\npath = \"x.redb\"",
            ),
            "ledger.path",
        ),
        (
            (
                "store = \"postgres\"",
                "store = \"postgres\"\nschema = \"Bad-Name\"",
            ),
            "ledger.schema",
        ),
        (
            (
                "store = \"postgres\"",
                "store = \"postgres\"\nlease_secs = 20\nrenew_secs = 15",
            ),
            "ledger.renew_secs",
        ),
        (
            (
                "store = \"postgres\"",
                "store = \"postgres\"\nlease_secs = 0",
            ),
            "ledger.lease_secs",
        ),
        // Too short to stop an executor in time after a missed renewal.
        (
            (
                "store = \"postgres\"",
                "store = \"postgres\"\nlease_secs = 22",
            ),
            "ledger.lease_secs",
        ),
    ] {
        let err = error_for(&postgres.replace(change.0, change.1));
        assert_eq!(err.key, key, "{err}");
    }
    // A key of the other store is named, not ignored.
    let err = error_for(&VALID.replace(
        "path = \"var/inflight.redb\"",
        "path = \"var/inflight.redb\"\nurl = \"postgresql://db/x\"",
    ));
    assert_eq!(err.key, "ledger.url");
    // A password in the URL (either form) is a configuration error naming
    // the key, and the error does not repeat it.
    for url in [
        "postgresql://inflight:s3cret-pw@db.example/inflight",
        "postgresql://inflight@db.example/inflight?password=s3cret-pw",
    ] {
        let err =
            error_for(&postgres.replace("postgresql://inflight@db.example:5432/inflight", url));
        assert_eq!(err.key, "ledger.url", "{err}");
        assert!(err.to_string().contains("password_env"), "{err}");
        assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    }
    let err = error_for(&VALID.replace("path = \"var/inflight.redb\"", ""));
    assert_eq!(err.key, "ledger.path");
}

#[test]
fn the_comment_policy_defaults_to_always_and_a_bad_one_is_named() {
    let (_dir, path) = write(VALID);
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.watcher.comment,
        inflight_config::CommentPolicy::Always
    );
    let (_dir, path) = write(&format!("{VALID}\n[watcher]\ncomment = \"failures\"\n"));
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.watcher.comment,
        inflight_config::CommentPolicy::Failures
    );
    let err = error_for(&format!("{VALID}\n[watcher]\ncomment = \"sometimes\"\n"));
    let text = err.to_string();
    assert!(
        text.contains("comment") && text.contains("sometimes") && text.contains("failures"),
        "{text}"
    );
}

#[test]
fn stopping_hands_over_by_default_and_parallel_is_one() {
    let (_dir, path) = write(VALID);
    let config = Config::load(&path).unwrap();
    assert_eq!(config.watcher.on_stop, inflight_config::StopMode::Handover);
    assert_eq!(config.watcher.drain, std::time::Duration::from_secs(600));
    assert!(config.roles.values().all(|r| r.parallel == 1));
    let (_dir, path) = write(&format!(
        "{VALID}\n[watcher]\non_stop = \"drain\"\ndrain_secs = 30\n"
    ));
    let config = Config::load(&path).unwrap();
    assert_eq!(config.watcher.on_stop, inflight_config::StopMode::Drain);
    assert_eq!(config.watcher.drain, std::time::Duration::from_secs(30));
    let err = error_for(&format!("{VALID}\n[watcher]\non_stop = \"kill\"\n"));
    let text = err.to_string();
    assert!(
        text.contains("on_stop") && text.contains("kill") && text.contains("handover"),
        "{text}"
    );
    let role = VALID
        .find("[roles.")
        .map(|at| &VALID[at..])
        .and_then(|rest| rest.lines().next())
        .unwrap()
        .to_owned();
    let (_dir, path) = write(&VALID.replace(&role, &format!("{role}\nparallel = 3")));
    let config = Config::load(&path).unwrap();
    assert!(config.roles.values().any(|r| r.parallel == 3));
    let err = error_for(&VALID.replace(&role, &format!("{role}\nparallel = 0")));
    assert!(err.key.ends_with(".parallel"), "{}", err.key);
}

#[test]
fn webhooks_need_an_address_and_a_secret_variable_and_raise_the_poll() {
    let hook =
        "\n[webhook]\nlisten = \"127.0.0.1:8099\"\nsecret_env = \"INFLIGHT_TEST_WEBHOOK_SECRET\"\n";
    let (_dir, path) = write(&format!("{VALID}{hook}"));
    let config = Config::load(&path).unwrap();
    let webhook = config.webhook.clone().expect("[webhook] was read");
    assert_eq!(webhook.listen, "127.0.0.1:8099".parse().unwrap());
    assert_eq!(webhook.max_body_bytes, 1 << 20);
    // With webhooks on the poll only reconciles: 300 s unless set.
    assert_eq!(config.watcher.poll_interval, Duration::from_secs(300));
    let (_dir, path) = write(&format!(
        "{VALID}{hook}\n[watcher]\npoll_interval_secs = 45\n"
    ));
    assert_eq!(
        Config::load(&path).unwrap().watcher.poll_interval,
        Duration::from_secs(45)
    );
    // Every secret variable is one an executor loses.
    assert!(
        config
            .secret_envs()
            .contains(&"INFLIGHT_TEST_WEBHOOK_SECRET".to_owned())
    );

    for (broken, key) in [
        ("\n[webhook]\nsecret_env = \"S\"\n", "webhook.listen"),
        (
            "\n[webhook]\nlisten = \"localhost\"\nsecret_env = \"S\"\n",
            "webhook.listen",
        ),
        (
            "\n[webhook]\nlisten = \"127.0.0.1:8099\"\n",
            "webhook.secret_env",
        ),
        (
            "\n[webhook]\nlisten = \"127.0.0.1:8099\"\nsecret_env = \" \"\n",
            "webhook.secret_env",
        ),
        (
            "\n[webhook]\nlisten = \"127.0.0.1:8099\"\nsecret_env = \"S\"\nmax_body_bytes = 0\n",
            "webhook.max_body_bytes",
        ),
    ] {
        assert_eq!(error_for(&format!("{VALID}{broken}")).key, key, "{broken}");
    }
}

#[test]
fn a_role_with_a_key_of_its_own_reads_it_and_others_keep_the_plane_key() {
    let text = VALID.replace(
        "backend = \"local\"\n",
        "backend = \"local\"\napi_key_env = \"INFLIGHT_TEST_ROLE_KEY\"\n",
    );
    let text = format!(
        "{text}\n[roles.review]\nclaim_state = \"Review\"\nrunning_state = \"Reviewing\"\ndone_state = \"Done\"\nblocked_state = \"Blocked\"\nbackend = \"local\"\n"
    );
    let (_dir, path) = write(&text);
    let config = Config::load(&path).unwrap();
    let goal = config.role("goal").unwrap();
    // Unset: the error names the role's key, never a value.
    let err = config.plane_config_for(goal).unwrap_err();
    assert_eq!(err.key, "roles.goal.api_key_env");
    assert!(err.to_string().contains("INFLIGHT_TEST_ROLE_KEY"), "{err}");
    // Two variables every process has stand in for two keys (setting a
    // variable here would race with the other tests reading theirs).
    let text = text
        .replace("INFLIGHT_TEST_ROLE_KEY", "HOME")
        .replace("INFLIGHT_TEST_KEY_FOR_CONFIG", "PATH");
    let (_dir, path) = write(&text);
    let config = Config::load(&path).unwrap();
    let (goal, review) = (config.role("goal").unwrap(), config.role("review").unwrap());
    let own = config.plane_config_for(goal).unwrap();
    let shared = config.plane_config_for(review).unwrap();
    assert_ne!(
        own.api_key.fingerprint(),
        shared.api_key.fingerprint(),
        "two keys, two budgets"
    );
    assert_eq!(
        shared.api_key.fingerprint(),
        config.plane_config().unwrap().api_key.fingerprint()
    );
    assert!(config.secret_envs().contains(&"HOME".to_owned()));
    let err = error_for(&VALID.replace(
        "backend = \"local\"\n",
        "backend = \"local\"\napi_key_env = \"\"\n",
    ));
    assert_eq!(err.key, "roles.goal.api_key_env");
}

/// The example configuration the package installs loads, and keeps its
/// ledger in the units' state directory.
#[test]
fn the_packaged_example_configuration_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/inflight.toml");
    let config = Config::load(std::path::Path::new(path)).unwrap();
    assert_eq!(
        config.ledger.path,
        std::path::PathBuf::from("/var/lib/inflight/inflight.redb")
    );
    assert_eq!(config.plane.api_key_env, "PLANE_API_KEY");
}
