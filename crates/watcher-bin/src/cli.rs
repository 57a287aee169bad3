//! `watcher`'s command line, in the library so that the manual page and
//! the shell completions are made from the same definition
//! (`cargo xtask dist`).

use std::path::PathBuf;

use clap::Parser;
use runtime::LogFormat;

/// Runs tasks from a Plane board for one role, keeping the ledger of
/// in-flight dispatches exact.
///
/// At start-up it reclaims what dead keepers and runners left behind
/// (bounded in time, never fatal), and adopts the keepers of its role still
/// running on this host, reporting the outcomes they recorded while no
/// runner was up. Then it takes the oldest tasks in the role's claim state
/// (up to roles.NAME.parallel at once), admits each against the backend's
/// caps, marks it running and hands it to a keeper: a process of its own
/// (this binary) that runs the backend's command with INFLIGHT_TASK_ID,
/// INFLIGHT_RUN_ID, INFLIGHT_BACKEND, INFLIGHT_ROLE and INFLIGHT_TASK_NAME
/// in its environment, enforces timeout_secs and records how it ended in
/// the ledger. The runner then moves the task to the done state on exit 0,
/// the blocked state otherwise, with a comment that says whether Plane took
/// the move (a failed run's also carries the end of its output). A task
/// left in the running state with nothing in flight is reported from the
/// ledger's record of its last run; a repair Plane refuses is retried with
/// a growing delay.
///
/// Before claiming, the role's four states and its labels are checked
/// against the project: a name Plane lacks is logged (naming the key and
/// Plane's names) and nothing is claimed until it resolves, checked again
/// every plane.cache_secs.
///
/// On SIGTERM or SIGINT it stops claiming at once, even while waiting for
/// Plane's rate budget, and then does what watcher.on_stop says: "handover"
/// (the default) exits within a second and leaves the keepers and their
/// executors running for the next runner to adopt, so a deploy's restart
/// costs no work; "drain" waits up to watcher.drain_secs for them first;
/// "interrupt" stops them (SIGTERM, grace, SIGKILL) and puts their tasks
/// back. To stop work explicitly: watchdog interrupt. It exits 0.
///
/// Exit status: 0 success, 1 runtime failure (with --once: the board could
/// not be read), 2 bad usage or configuration (with --once: a role name
/// Plane lacks).
#[derive(Debug, Parser)]
#[command(name = "watcher", version = runtime::VERSION)]
pub struct Args {
    /// The configuration file (TOML; see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The role to run, one of the [roles.NAME] tables.
    #[arg(long, value_name = "NAME")]
    pub role: String,
    /// Reconcile, adopt, run at most one new task to its end, then exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between looks at an idle board (overrides
    /// watcher.poll_interval_secs).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_interval: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (GET only; e.g.
    /// 127.0.0.1:9101): this runner's admissions, finishes, Plane requests
    /// and lease renewals, and the ledger's open slots and caps.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log format on stderr; RUST_LOG sets the level.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}
