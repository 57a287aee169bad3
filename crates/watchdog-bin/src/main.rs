//! `watchdog`: periodic orphan scans and the operator's commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ledger_core::FinishOutcome;
use runtime::{Config, LogFormat, init_logging};
use watchdog_bin::WatchdogError;

/// Watches inflight's ledger: reclaims slots that dead runners left open, and
/// answers an operator's questions about it.
///
/// Every command shares the ledger file with running runners. Reports and
/// listings go to stdout; logs go to stderr.
///
/// Exit status: 0 success, 1 runtime failure, 2 bad usage or configuration.
#[derive(Debug, Parser)]
#[command(name = "watchdog", version)]
struct Args {
    /// The configuration file (TOML; see docs/configuration.md).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr; RUST_LOG sets the level.
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One pass of the orphan rules; prints the JSON report
    /// {"scanned_at", "apply", "actions": [...], "project": {...},
    /// "lookups_failed", ...}. A dry run unless --apply. Exits 1, after the
    /// report, when the project did not answer or a lookup or a reclaim
    /// failed.
    Scan {
        /// Reclaim what the rules match (and put still-running tasks back).
        #[arg(long)]
        apply: bool,
    },
    /// Scan every SECS seconds until SIGTERM or SIGINT; one JSON report a
    /// line. A scan that fails is logged ("scan incomplete") and retried at
    /// the next tick. With a `[webhook]` table in the configuration, also
    /// receive Plane's webhook deliveries on webhook.listen (secret from
    /// webhook.secret_env) and wake the runners they concern.
    Run {
        /// Seconds between scans.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Reclaim what the rules match.
        #[arg(long)]
        apply: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (GET only; e.g.
        /// 127.0.0.1:9102).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Every SECS seconds (the scan interval), rewrite FILE (e.g.
        /// /var/lib/node_exporter/textfile/inflight.prom) with the metrics,
        /// atomically, for node_exporter's textfile collector.
        #[arg(long, value_name = "FILE")]
        textfile: Option<PathBuf>,
    },
    /// Print the ledger's metrics once (open slots, caps, oldest open slot,
    /// starts in the rate windows) in Prometheus' text format.
    Metrics,
    /// Open slots with their owners' liveness, and counts against the caps.
    Status {
        /// One JSON object with a `slots` array.
        #[arg(long)]
        json: bool,
    },
    /// The audit log.
    Events {
        /// Only events at or after this time (RFC 3339, e.g.
        /// 2026-11-28T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Release an open slot by hand (finished as released by operator).
    Release {
        /// The slot's backend.
        #[arg(long)]
        backend: String,
        /// The slot's task id.
        #[arg(long)]
        task: String,
        /// Only if this run holds it.
        #[arg(long)]
        run: Option<String>,
    },
    /// Stop running executors through their keepers: each keeper on this
    /// host gets SIGTERM, stops its executor (SIGTERM to the executor's
    /// process group, watcher.grace_secs, SIGKILL) and records the run as
    /// interrupted; the role's runner then finishes the slot and puts the
    /// task back in its claim state (when no runner is up, the next one
    /// does). Give exactly one of --task, --role, --all. Exits 1 when
    /// nothing running matches --task or --role.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["task", "role", "all"])))]
    Interrupt {
        /// The task (work item id) whose run to stop.
        #[arg(long)]
        task: Option<String>,
        /// Every run of this role.
        #[arg(long)]
        role: Option<String>,
        /// Every run on this host.
        #[arg(long)]
        all: bool,
    },
    /// Check the configuration against Plane: the project answers with this
    /// key, and every role's states and labels exist there. Exits 2 naming
    /// each role key whose name Plane lacks, 1 when Plane does not answer.
    CheckConfig,
    /// Import the reference system's usage.json: rebuilds the open slots and
    /// the event history. Safe to repeat.
    ImportUsageJson {
        /// The usage.json file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let Some(config_path) = args.config.clone() else {
        eprintln!("watchdog: --config FILE is required");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("watchdog: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(&config_path, args.command));
    // A store call cut short by shutdown (a start-up sweep waiting for
    // another process's write lock, say) may still sit on a blocking
    // thread: give it a moment, then exit without it. Its commit, if it
    // was under way, is atomic like any other a kill interrupts.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (WatchdogError::Config(_)
            | WatchdogError::Usage(_)
            | WatchdogError::Misconfigured(_)),
        ) => {
            eprintln!("watchdog: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("watchdog: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs a one-shot command's store calls on the blocking pool, so that even
/// these never block the runtime's thread.
async fn off_runtime<T: Send + 'static>(
    command: impl FnOnce() -> Result<T, WatchdogError> + Send + 'static,
) -> Result<T, WatchdogError> {
    tokio::task::spawn_blocking(command).await.map_err(|e| {
        WatchdogError::Io(std::io::Error::other(format!(
            "the command did not complete: {e}"
        )))
    })?
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render: {e}\"}}"))
}

async fn run(config_path: &std::path::Path, command: Command) -> Result<(), WatchdogError> {
    let config = Config::load(config_path)?;
    match command {
        Command::Scan { apply } => {
            let scanner = watchdog_bin::Scanner::new(config)?;
            let report = scanner.scan(apply).await?;
            println!("{}", json(&report));
            if let Some(failure) = report.failure() {
                return Err(WatchdogError::ScanFailed(failure));
            }
        }
        Command::Metrics => {
            let store = runtime::open_store(&config)?;
            let metrics = runtime::Metrics::new();
            let probe = runtime::LinuxProcessProbe::new(
                runtime::HostIdentity::current()?,
                config.watcher.grace,
            );
            let side = runtime::LedgerSide {
                store,
                config,
                clock: std::sync::Arc::new(ledger_core::SystemClock),
                probe: Some(std::sync::Arc::new(probe)),
            };
            let refresh = {
                let (metrics, side) = (metrics.clone(), side.clone());
                off_runtime(move || {
                    Ok(metrics.refresh(
                        &*side.store,
                        &side.config,
                        side.probe.as_deref(),
                        side.clock.now(),
                    )?)
                })
                .await
            };
            refresh?;
            print!("{}", metrics.render_ledger(false));
        }
        Command::Run {
            interval,
            apply,
            metrics_addr,
            textfile,
        } => {
            let shutdown = runtime::Shutdown::on_signals()?;
            let scanner = watchdog_bin::Scanner::new(config.clone())?;
            let hooks = match (scanner.webhook_receiver()?, &config.webhook) {
                (Some(receiver), Some(settings)) => {
                    let listener = tokio::net::TcpListener::bind(settings.listen)
                        .await
                        .map_err(|e| {
                            std::io::Error::new(
                                e.kind(),
                                format!("webhook.listen {}: {e}", settings.listen),
                            )
                        })?;
                    tracing::info!(listen = %settings.listen, "receiving Plane's webhooks");
                    let serve = watchdog_bin::webhook::serve(
                        listener,
                        std::sync::Arc::new(receiver),
                        shutdown.stopped(),
                    );
                    Some(tokio::spawn(serve))
                }
                _ => None,
            };
            let serving = match metrics_addr {
                Some(addr) => Some(
                    runtime::spawn_metrics(
                        addr,
                        scanner.metrics(),
                        scanner.ledger_side(),
                        shutdown.stopped(),
                    )
                    .await?,
                ),
                None => None,
            };
            if let Some(path) = textfile {
                tokio::spawn(rewrite_textfile(
                    scanner.metrics(),
                    scanner.ledger_side(),
                    path,
                    Duration::from_secs(interval),
                    shutdown.stopped(),
                ));
            }
            watchdog_bin::run_scans(
                &scanner,
                Duration::from_secs(interval),
                apply,
                shutdown.stopped(),
                |outcome| {
                    match outcome {
                        Ok(report) => {
                            println!("{}", json(&report));
                            if let Some(failure) = report.failure() {
                                tracing::error!(%failure, "scan incomplete");
                            }
                        }
                        // A failed scan is retried at the next tick.
                        Err(e) => tracing::error!(error = %e, "scan incomplete"),
                    }
                },
            )
            .await;
            if let Some(serving) = serving
                && let Ok(Err(e)) = serving.await
            {
                tracing::error!(error = %e, "the metrics listener failed");
            }
            if let Some(hooks) = hooks
                && let Ok(Err(e)) = hooks.await
            {
                tracing::error!(error = %e, "the webhook listener failed");
            }
            tracing::info!("watchdog stopped");
        }
        Command::CheckConfig => {
            let check = watchdog_bin::check_config(&config).await?;
            println!(
                "plane: project {} answers ({} work items)",
                config.project(),
                check.work_items
            );
            for (role, problems) in &check.roles {
                if problems.is_empty() {
                    println!("role {role}: ok");
                }
                for problem in problems {
                    println!("role {role}: {problem}");
                }
            }
            let problems: Vec<String> = check.problems().map(ToString::to_string).collect();
            if !problems.is_empty() {
                return Err(WatchdogError::Misconfigured(problems.join("; ")));
            }
        }
        Command::Status { json: as_json } => {
            let status = off_runtime(move || watchdog_bin::status(&config)).await?;
            if as_json {
                println!("{}", json(&status));
            } else {
                print!("{}", watchdog_bin::status_text(&status));
            }
        }
        Command::Events {
            since,
            json: as_json,
        } => {
            let events =
                off_runtime(move || watchdog_bin::events(&config, since.as_deref())).await?;
            for event in events {
                if as_json {
                    println!("{}", json(&event));
                } else {
                    println!("{}", watchdog_bin::event_text(&event));
                }
            }
        }
        Command::Interrupt { task, role, all } => {
            let which = match (task, role) {
                (Some(task), _) => watchdog_bin::InterruptWhich::Task(task),
                (_, Some(role)) => watchdog_bin::InterruptWhich::Role(role),
                _ if all => watchdog_bin::InterruptWhich::All,
                _ => {
                    return Err(WatchdogError::Usage(
                        "interrupt needs --task, --role or --all".into(),
                    ));
                }
            };
            let asked = which.clone();
            let done = off_runtime(move || watchdog_bin::interrupt(&config, &asked)).await?;
            for (slot, verdict) in &done {
                println!("{}", watchdog_bin::interrupt_text(slot, verdict));
            }
            if done.is_empty() {
                match which {
                    watchdog_bin::InterruptWhich::All => println!("nothing is running"),
                    other => {
                        return Err(WatchdogError::NothingToInterrupt(other.to_string()));
                    }
                }
            }
        }
        Command::Release { backend, task, run } => {
            let (b, t) = (backend.clone(), task.clone());
            let released =
                off_runtime(move || watchdog_bin::release(&config, &b, &t, run.as_deref())).await?;
            match released {
                FinishOutcome::Finished(slot) => {
                    println!("released {} (run {})", slot.key, slot.run_id)
                }
                FinishOutcome::NotInFlight => {
                    println!("nothing to release: no open slot for {backend}/{task}")
                }
                FinishOutcome::OtherRunInFlight { open_run } => {
                    println!(
                        "not released: {backend}/{task} is held by run {open_run}, not the one given"
                    )
                }
            }
        }
        Command::ImportUsageJson { file } => {
            let report =
                off_runtime(move || watchdog_bin::import_usage_json(&config, &file)).await?;
            println!(
                "{}",
                serde_json::json!({
                    "entries": report.entries,
                    "started": report.started,
                    "finished": report.finished,
                    "unrelated": report.unrelated,
                    "malformed": report.malformed,
                    "malformed_examples": report.malformed_examples,
                    "events_recorded": report.events_recorded,
                    "already_imported": report.already_imported,
                    "slots_opened": report.slots_opened,
                    "slots_closed": report.slots_closed,
                    "slots_held_by_other_runs": report.slots_held_by_other_runs,
                    "open_after_import": report.open_after_fold.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            );
        }
    }
    Ok(())
}

/// Rewrites the textfile with the metrics every `interval` until `stop`:
/// the ledger's side is read on the blocking pool, the file replaced
/// atomically.
async fn rewrite_textfile(
    metrics: std::sync::Arc<runtime::Metrics>,
    side: runtime::LedgerSide,
    path: PathBuf,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let text = metrics.scrape(Some(&side), false).await;
        let target = path.clone();
        let written =
            tokio::task::spawn_blocking(move || runtime::write_textfile(&target, &text)).await;
        if let Ok(Err(error)) = written {
            tracing::warn!(path = %path.display(), %error, "could not write the metrics textfile");
        }
    }
}
