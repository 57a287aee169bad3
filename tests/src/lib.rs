//! End-to-end tests of inflight: see `e2e/`. The crate also ships the
//! `e2e-executor` helper the tests run as an executor and the chaos `soak`
//! binary; this library holds what they share.

use std::path::{Path, PathBuf};

/// A binary of the workspace, found next to the running executable: in
/// `target/<profile>/` for a binary, one level up for a test or benchmark
/// (which run from `target/<profile>/deps/`).
///
/// # Panics
///
/// When it is not there: the binaries must be built first
/// (`cargo build --workspace --bins`; `cargo xtask ci` does).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join(name), dir.parent().unwrap_or(dir).join(name)];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!(
            "{name} is missing next to {}: build the binaries first (`cargo build --workspace --bins`; `cargo xtask ci` does)",
            exe.display()
        )
    })
}

/// How many `e2e-executor`s ran at once at most, and how many run now, as
/// they recorded it in `dir/holders`.
pub fn executor_holders(dir: &Path) -> (i64, i64) {
    let text = std::fs::read_to_string(dir.join("holders")).unwrap_or_default();
    let mut parts = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
    let current = parts.next().unwrap_or(0);
    (parts.next().unwrap_or(0), current)
}

/// SIGKILLs every process whose environment has `E2E_DIR=dir`: what a test
/// world started, keepers and executors included (they outlive runners).
pub fn kill_processes_of(dir: &Path) {
    for pid in processes_with_env(&format!("E2E_DIR={}", dir.display())) {
        send_signal(pid, libc::SIGKILL);
    }
}

/// Every process but this one whose environment holds `var` (`NAME=value`,
/// whole).
pub fn processes_with_env(var: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            (pid != me && environ.split(|b| *b == 0).any(|v| v == var.as_bytes())).then_some(pid)
        })
        .collect()
}

/// A process's name (`/proc/PID/comm`), empty once it is gone.
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// An inflight configuration file for the end-to-end tests, the soak and the
/// benchmark: one backend, `local`, and the roles given. `extra` adds lines
/// to a table: `("plane", "rate_limit_per_minute = 3000")`.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// `[plane] base_url`.
    pub base_url: String,
    /// `[plane] project_id`.
    pub project_id: String,
    /// `[plane] api_key_env`.
    pub key_env: String,
    /// `[backends.local] command`, as argv.
    pub command: Vec<String>,
    /// `[backends.local] max_concurrent`.
    pub cap: u32,
    /// The roles: name, claim state, running, done and blocked states, and
    /// `max_attempts`.
    pub roles: Vec<TestRole>,
    /// Lines added to a table, by table name.
    pub extra: Vec<(&'static str, String)>,
}

/// One `[roles.NAME]` of a [`TestConfig`].
#[derive(Debug, Clone)]
pub struct TestRole {
    /// The role's name.
    pub name: String,
    /// `claim_state`.
    pub claim: String,
    /// `running_state`.
    pub running: String,
    /// `done_state`.
    pub done: String,
    /// `blocked_state`.
    pub blocked: String,
    /// `max_attempts`.
    pub max_attempts: u32,
}

impl TestRole {
    /// A role claiming from `claim`, running in "Running", done in "Done",
    /// blocked in "Blocked", with 3 attempts.
    pub fn new(name: &str, claim: &str) -> Self {
        Self {
            name: name.into(),
            claim: claim.into(),
            running: "Running".into(),
            done: "Done".into(),
            blocked: "Blocked".into(),
            max_attempts: 3,
        }
    }
}

impl TestConfig {
    /// The file's text. The ledger is `var/inflight.redb` beside it.
    pub fn render(&self) -> String {
        let extra = |table: &str| -> String {
            self.extra
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, line)| format!("{line}\n"))
                .collect()
        };
        let command: Vec<String> = self.command.iter().map(|a| format!("{a:?}")).collect();
        let mut text = format!(
            "[ledger]\npath = \"var/inflight.redb\"\n{}\n\
             [plane]\nbase_url = \"{}\"\nworkspace = \"acme\"\nproject_id = \"{}\"\napi_key_env = \"{}\"\n{}\n\
             [limits]\n{}\n\
             [backends.local]\nmax_concurrent = {}\ncommand = [{}]\n{}\n\
             [watcher]\n{}",
            extra("ledger"),
            self.base_url,
            self.project_id,
            self.key_env,
            extra("plane"),
            extra("limits"),
            self.cap,
            command.join(", "),
            extra("backends.local"),
            extra("watcher"),
        );
        for role in &self.roles {
            text.push_str(&format!(
                "\n[roles.{}]\nclaim_state = \"{}\"\nrunning_state = \"{}\"\ndone_state = \"{}\"\nblocked_state = \"{}\"\nbackend = \"local\"\nmax_attempts = {}\n{}",
                role.name,
                role.claim,
                role.running,
                role.done,
                role.blocked,
                role.max_attempts,
                extra(&format!("roles.{}", role.name)),
            ));
        }
        // Any other table (`[webhook]`, say), in the order first named.
        let known = |t: &str| {
            ["ledger", "plane", "limits", "backends.local", "watcher"].contains(&t)
                || self.roles.iter().any(|r| t == format!("roles.{}", r.name))
        };
        let mut others: Vec<&str> = Vec::new();
        for (table, _) in &self.extra {
            if !known(table) && !others.contains(table) {
                others.push(table);
            }
        }
        for table in others {
            text.push_str(&format!("\n[{table}]\n{}", extra(table)));
        }
        text
    }
}

/// Opens a slot for `task` on backend `local` in `store`, held by `owner`
/// with a lease of `lease`, as a runner's admission would (caps wide
/// open): how tests put a slot of a gone or foreign runner in a ledger.
pub fn open_test_slot(
    store: &dyn ledger_core::LedgerStore,
    task: &str,
    owner: ledger_core::Owner,
    lease: std::time::Duration,
) -> ledger_core::Slot {
    use ledger_core::Clock;
    let now = ledger_core::SystemClock.now();
    let request = ledger_core::AdmitRequest {
        key: ledger_core::SlotKey::new(
            ledger_core::Backend::new("local").expect("a valid backend"),
            ledger_core::TaskId::new(task).expect("a valid task id"),
        ),
        run_id: ledger_core::RunId::generate(now),
        owner,
        lease,
    };
    let limits = ledger_core::Limits {
        global_max_concurrent: None,
        backend: ledger_core::BackendLimits {
            max_concurrent: 100,
            max_per_hour: None,
            max_per_day: None,
        },
    };
    match store
        .admit(&request, &limits, now)
        .expect("the store admits")
    {
        ledger_core::AdmitOutcome::Admitted(slot) => slot,
        ledger_core::AdmitOutcome::Denied(denial) => panic!("denied: {denial}"),
    }
}
