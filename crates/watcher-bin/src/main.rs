//! `watcher`: the inflight runner for one role.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use runtime::{Config, init_logging};
use watcher_bin::cli::Args;
use watcher_bin::{Runner, WatcherError};

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
