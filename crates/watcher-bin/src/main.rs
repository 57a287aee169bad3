//! `watcher`: the inflight runner for one role.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use runtime::{Config, LogFormat, init_logging};
use watcher_bin::{Runner, WatcherError};

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
struct Args {
    /// The configuration file (TOML; see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The role to run, one of the [roles.NAME] tables.
    #[arg(long, value_name = "NAME")]
    role: String,
    /// Reconcile, adopt, run at most one new task to its end, then exit.
    #[arg(long)]
    once: bool,
    /// Seconds between looks at an idle board (overrides
    /// watcher.poll_interval_secs).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    poll_interval: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (GET only; e.g.
    /// 127.0.0.1:9101): this runner's admissions, finishes, Plane requests
    /// and lease renewals, and the ledger's open slots and caps.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Log format on stderr; RUST_LOG sets the level.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    // An executor this runner spawned starts as this binary, waiting at its
    // start gate; it must not get as far as parsing a runner's arguments.
    if let Some(status) = watcher_bin::run_exec_gate_if_asked() {
        return status;
    }
    // A keeper this runner (or an earlier one) started: it holds one
    // dispatch and outlives runners.
    if let Some(status) = watcher_bin::run_keeper_if_asked() {
        return status;
    }
    let args = Args::parse();
    init_logging(args.log_format);
    let format = args.log_format;
    runtime::run_main("watcher", format, run(args), |e| match e {
        WatcherError::Config(_) | WatcherError::Role { .. } => 2,
        _ => 1,
    })
}

async fn run(args: Args) -> Result<(), WatcherError> {
    let config = Config::load(&args.config)?;
    let shutdown = runtime::Shutdown::on_signals()?;
    // A stop while the store is still being opened (a database that does
    // not answer yet) is a stop: nothing was claimed.
    let mut runner = tokio::select! {
        runner = Runner::open(config, args.role, args.once, args.log_format) => runner?,
        _ = shutdown.stopped() => return Ok(()),
    };
    if let Some(secs) = args.poll_interval {
        runner = runner.with_poll_interval(Duration::from_secs(secs));
    }
    let serving = match args.metrics_addr {
        Some(addr) => Some(
            runtime::spawn_metrics(
                addr,
                runner.metrics(),
                runner.ledger_side(),
                shutdown.stopped(),
            )
            .await?,
        ),
        None => None,
    };
    let outcome = runner.run(shutdown.stopped()).await;
    shutdown.stop();
    if let Some(serving) = serving {
        let _ = serving.await;
    }
    outcome?;
    Ok(())
}
