//! `watchdog`: periodic orphan scans and the operator's commands. This file
//! only opens what a command needs, calls the library and turns the outcome
//! into output and an exit status.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ledger_core::{Clock, SystemClock};
use runtime::{Config, HostIdentity, init_logging};
use watchdog_bin::cli::{Args, Command};
use watchdog_bin::explain::{explain, explanation_text, find_task, gather};
use watchdog_bin::{
    EventFilter, InterruptWhich, RunOptions, Scanner, WatchdogError, check_config, check_locally,
    config_check_text, event_text, events, import_report_json, import_usage_json, interrupt,
    interrupt_text, metrics_text, open_read_only, probe, release, release_text, status,
    status_text, unreadable_events, with_store, with_store_read_only,
};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let Some(config_path) = args.config.clone() else {
        runtime::report_failure("watchdog", args.log_format, &"--config FILE is required");
        return ExitCode::from(2);
    };
    let work = async move { execute(Config::load(&config_path)?, args.command).await };
    runtime::run_main("watchdog", args.log_format, work, |e| match e {
        WatchdogError::Config(_) | WatchdogError::Usage(_) | WatchdogError::Misconfigured(_) => 2,
        _ => 1,
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render: {e}\"}}"))
}

async fn execute(config: Config, command: Command) -> Result<(), WatchdogError> {
    let now = || SystemClock.now();
    match command {
        Command::Scan { apply } => {
            let scanner = Scanner::open(config).await?;
            let report = scanner.scan(apply).await?;
            println!("{}", json(&report));
            if let Some(failure) = report.failure() {
                return Err(WatchdogError::ScanFailed(failure));
            }
        }
        Command::Run {
            interval,
            apply,
            metrics_addr,
            textfile,
            http,
        } => {
            let shutdown = runtime::Shutdown::on_signals()?;
            let scanner = Scanner::open(config).await?;
            let options = RunOptions {
                interval: Duration::from_secs(interval),
                apply,
                metrics_addr,
                textfile,
                http,
            };
            // A failed scan is logged ("scan incomplete") and retried at the
            // next tick.
            let each = |outcome: Result<reconcile::ScanReport, WatchdogError>| match outcome
                .and_then(|report| {
                    println!("{}", json(&report));
                    report
                        .failure()
                        .map_or(Ok(()), |f| Err(WatchdogError::ScanFailed(f)))
                }) {
                Ok(()) => {}
                Err(e) => tracing::error!(error = %e, "scan incomplete"),
            };
            watchdog_bin::run(scanner, options, shutdown.stopped(), each).await?;
        }
        Command::Serve { http } => {
            // The token first: a refused address must not wait on a store.
            let token = watchdog_bin::web::token_for(&config, http)?;
            let shutdown = runtime::Shutdown::on_signals()?;
            let plane = plane_client::PlaneClient::new(config.plane_config()?)?;
            let window = watchdog_bin::web::Window {
                store: open_read_only(&config).await?,
                plane: std::sync::Arc::new(plane),
                probe: std::sync::Arc::new(probe(&config)?),
                clock: std::sync::Arc::new(SystemClock),
                config,
            };
            let listener = watchdog_bin::web::bind(http).await?;
            watchdog_bin::web::serve(listener, window, token, shutdown.stopped()).await?;
        }
        Command::CheckConfig { offline: true } => {
            check_locally(&config).await?;
            println!("configuration: ok (offline: Plane and the ledger not asked)");
        }
        Command::CheckConfig { offline: false } => {
            let check = check_config(&config).await?;
            print!("{}", config_check_text(&config, &check));
            let problems: Vec<String> = check.problems().map(ToString::to_string).collect();
            if !problems.is_empty() {
                return Err(WatchdogError::Misconfigured(problems.join("; ")));
            }
        }
        Command::Metrics => {
            let text = with_store_read_only(&config, move |store, config| {
                metrics_text(store, config, &probe(config)?, now())
            });
            print!("{}", text.await?);
        }
        Command::Status {
            watch: Some(secs), ..
        } => {
            let shutdown = runtime::Shutdown::on_signals()?;
            let mut stopped = std::pin::pin!(shutdown.stopped());
            let mut screen = watchdog_bin::Redraw::start();
            loop {
                let status = with_store_read_only(&config, move |store, config| {
                    status(store, config, &probe(config)?, now())
                });
                let text = match status.await {
                    Ok(status) => status_text(&status),
                    Err(e) => format!("status: {e}\n"),
                };
                screen.show(&format!(
                    "every {secs}s, {} (Ctrl-C to stop)\n\n{text}",
                    now()
                ));
                tokio::select! {
                    () = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_secs(secs)) => {}
                }
            }
        }
        Command::Status {
            json: as_json,
            watch: None,
        } => {
            let status = with_store_read_only(&config, move |store, config| {
                status(store, config, &probe(config)?, now())
            });
            let status = status.await?;
            match as_json {
                true => println!("{}", json(&status)),
                false => print!("{}", status_text(&status)),
            }
        }
        Command::Events {
            since,
            task,
            backend,
            kind,
            limit,
            follow,
            json: as_json,
        } => {
            let filter = EventFilter {
                since,
                task: task
                    .map(|t| ledger_core::TaskId::new(t.clone()))
                    .transpose()
                    .map_err(|e| WatchdogError::Usage(format!("--task: {e}")))?,
                backend: backend
                    .map(ledger_core::Backend::new)
                    .transpose()
                    .map_err(|e| WatchdogError::Usage(format!("--backend: {e}")))?,
                kinds: kind,
            };
            // A reader that went away (`| head`) ends the listing, quietly.
            let print = |events: &[ledger_core::Event]| -> std::io::Result<()> {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for event in events {
                    match as_json {
                        true => writeln!(out, "{}", json(event))?,
                        false => writeln!(out, "{}", event_text(event))?,
                    }
                }
                out.flush()
            };
            let store = open_read_only(&config).await?;
            let listed = {
                let filter = filter.clone();
                runtime::on_store(&store, move |s| events(s, &filter, limit)).await?
            };
            let mut unreadable = unreadable_events(&listed);
            if print(&listed).is_ok() && follow {
                let shutdown = runtime::Shutdown::on_signals()?;
                let mut stopped = std::pin::pin!(shutdown.stopped());
                let mut after = listed.iter().map(|e| e.seq).max().unwrap_or(0);
                loop {
                    let page = runtime::on_store(&store, move |s| s.events_after(after, 10_000));
                    let page = page.await?;
                    if let Some(last) = page.last() {
                        after = last.seq;
                    }
                    let new: Vec<_> = page.into_iter().filter(|e| filter.matches(e)).collect();
                    unreadable += unreadable_events(&new);
                    if print(&new).is_err() {
                        break;
                    }
                    tokio::select! {
                        () = &mut stopped => break,
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
            // Listed in place; still a failure to report.
            if unreadable > 0 {
                return Err(WatchdogError::UnreadableEvents(unreadable));
            }
        }
        Command::Explain {
            task,
            json: as_json,
        } => {
            let plane = plane_client::PlaneClient::new(config.plane_config()?)?;
            let found = find_task(&plane, &config, &task).await?;
            let wanted = found.task.clone();
            let store = open_read_only(&config).await?;
            let (read_config, probe) = (config.clone(), probe(&config)?);
            let facts = runtime::on_store(&store, move |s| {
                gather(s, &read_config, &probe, &wanted, now())
            });
            let explanation = explain(&found, &facts.await?, &config);
            match as_json {
                true => println!("{}", json(&explanation)),
                false => print!("{}", explanation_text(&explanation)),
            }
            if explanation.unknown() {
                return Err(WatchdogError::UnknownTask(format!(
                    "{task}: no such work item in project {}, and the ledger has no record of it",
                    config.project()
                )));
            }
            if let Some(error) = explanation.plane_error {
                return Err(WatchdogError::PlaneUnanswered(error));
            }
        }
        Command::Interrupt { task, role, all } => {
            let which = InterruptWhich::from_flags(task, role, all)?;
            let done = with_store(&config, move |store, config| {
                interrupt(store, config, &HostIdentity::current()?, &which)
            });
            let done = done.await?;
            for (slot, verdict) in &done {
                println!("{}", interrupt_text(slot, verdict));
            }
            if done.is_empty() {
                println!("nothing is running");
            }
        }
        Command::Release { backend, task, run } => {
            let (b, t) = (backend.clone(), task.clone());
            let released = with_store(&config, move |store, config| {
                release(store, config, &b, &t, run.as_deref(), now())
            });
            println!("{}", release_text(&backend, &task, &released.await?));
        }
        Command::ImportUsageJson { file } => {
            let report = with_store(&config, move |store, _| import_usage_json(store, &file));
            println!("{}", import_report_json(&report.await?));
        }
    }
    Ok(())
}
