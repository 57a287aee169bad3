//! `watchdog run`: scans on a cadence, Plane's webhook deliveries, the
//! metrics listener and the textfile, until shutdown. The binary only
//! parses flags and calls [`run`]; tests drive it in-process with a
//! scanner of their own and a paused clock.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reconcile::ScanReport;
use runtime::Shutdown;

use crate::{Scanner, WatchdogError, webhook};

/// What `watchdog run` does besides scanning.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Time between scans (and textfile rewrites).
    pub interval: Duration,
    /// Reclaim what the rules match.
    pub apply: bool,
    /// Serve `/metrics` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Rewrite this file with the metrics every interval.
    pub textfile: Option<PathBuf>,
    /// Serve the web page here.
    pub http: Option<SocketAddr>,
}

/// Runs the watchdog until `shutdown` completes: binds the webhook
/// listener (when the configuration has `[webhook]`) and the metrics
/// listener first, so a port in use fails at once, then scans every
/// `options.interval`, handing each scan's outcome to `each`. Returns when
/// every listener has stopped.
pub async fn run(
    scanner: Scanner,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    each: impl FnMut(Result<ScanReport, WatchdogError>),
) -> Result<(), WatchdogError> {
    let shutdown = Shutdown::when(shutdown);
    // Refused before anything listens: an exposed page needs its token.
    let page_token = match options.http {
        Some(addr) => crate::web::token_for(scanner.config(), addr)?,
        None => None,
    };
    let hooks = match (scanner.webhook_receiver()?, &scanner.config().webhook) {
        (Some(receiver), Some(settings)) => {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("webhook.listen {}: {e}", settings.listen),
                    )
                })?;
            tracing::info!(listen = %listener.local_addr()?, "receiving Plane's webhooks");
            let serve = webhook::serve(listener, Arc::new(receiver), shutdown.stopped());
            tokio::spawn(watch_deliveries(
                scanner.store(),
                scanner.metrics(),
                settings.silent_poll,
                shutdown.stopped(),
            ));
            Some(tokio::spawn(serve))
        }
        _ => None,
    };
    let page = match options.http {
        Some(addr) => {
            let listener = crate::web::bind(addr).await?;
            Some(tokio::spawn(crate::web::serve(
                listener,
                scanner.window(),
                page_token,
                shutdown.stopped(),
            )))
        }
        None => None,
    };
    let serving = match options.metrics_addr {
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
    let textfile = options.textfile.map(|path| {
        tokio::spawn(rewrite_textfile(
            scanner.metrics(),
            scanner.ledger_side(),
            path,
            options.interval,
            shutdown.stopped(),
        ))
    });
    run_scans(
        &scanner,
        options.interval,
        options.apply,
        shutdown.stopped(),
        each,
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
    if let Some(page) = page
        && let Ok(Err(e)) = page.await
    {
        tracing::error!(error = %e, "the web page's listener failed");
    }
    if let Some(textfile) = textfile {
        let _ = textfile.await;
    }
    tracing::info!("watchdog stopped");
    Ok(())
}

/// Scans every `interval` until `shutdown` completes, handing each scan's
/// outcome to `each` as it ends. Shutdown cancels a scan that is waiting on
/// Plane (for its rate budget, a backoff, a slow answer); what the scan had
/// already applied stays applied, and nothing is half-applied, since each
/// reclaim is one conditional finish.
pub async fn run_scans(
    scanner: &Scanner,
    interval: Duration,
    apply: bool,
    shutdown: impl Future<Output = ()>,
    mut each: impl FnMut(Result<ScanReport, WatchdogError>),
) {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let started = std::time::Instant::now();
        tokio::select! {
            _ = &mut shutdown => break,
            outcome = scanner.scan(apply) => {
                scanner.metrics().scanned(started.elapsed(), outcome.as_ref().ok());
                each(outcome)
            }
        }
    }
}

/// Tells, every `silent_poll_secs` (at least every few seconds), whether
/// Plane still sends webhook deliveries: every admission moves its task
/// to a running state in Plane, and Plane sends a delivery for every
/// state change. An admission with no verified delivery in the grace
/// after it means Plane stopped sending (it sets a webhook inactive after
/// five failed deliveries in a row, as when this receiver was down for a
/// while). Says so in the log and in `inflight_webhook_silent`, until a
/// delivery arrives. (The runners judge for themselves, from the board,
/// and poll at `webhook.silent_poll_secs` meanwhile.)
async fn watch_deliveries(
    store: Arc<dyn ledger_core::Store>,
    metrics: Arc<runtime::Metrics>,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let verified = |metrics: &runtime::Metrics| -> u64 {
        ["hinted", "ignored", "repeated", "failed"]
            .iter()
            .map(|verdict| metrics.webhooks_with(verdict))
            .sum()
    };
    // Admissions from before this start are not this watch's business:
    // start after the newest event.
    let mut cursor = 0;
    loop {
        let after = cursor;
        match runtime::on_store(&store, move |s| s.events_after(after, 10_000)).await {
            Ok(events) if !events.is_empty() => {
                cursor = events.last().map_or(cursor, |e| e.seq);
            }
            _ => break,
        }
    }
    let mut delivered = verified(&metrics);
    // The first admission not yet followed by a delivery, and whether the
    // silence has been said.
    let mut waiting_since: Option<tokio::time::Instant> = None;
    let mut silent = false;
    let mut ticks = tokio::time::interval(every.min(runtime::DELIVERY_GRACE));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let count = verified(&metrics);
        if count > delivered {
            delivered = count;
            waiting_since = None;
            if silent {
                silent = false;
                metrics.webhooks_silent(false);
                tracing::info!("webhook deliveries arrive again");
            }
        }
        let after = cursor;
        let Ok(events) = runtime::on_store(&store, move |s| s.events_after(after, 10_000)).await
        else {
            continue;
        };
        if let Some(last) = events.last() {
            cursor = last.seq;
        }
        let admitted = events
            .iter()
            .any(|e| matches!(e.kind, ledger_core::EventKind::Started { .. }));
        if admitted && waiting_since.is_none() {
            waiting_since = Some(now);
        }
        if let Some(since) = waiting_since
            && !silent
            && now.duration_since(since) >= runtime::DELIVERY_GRACE
        {
            silent = true;
            metrics.webhooks_silent(true);
            tracing::warn!(
                waited_secs = now.duration_since(since).as_secs(),
                "webhook deliveries are missing: tasks were dispatched (moved in Plane) and no delivery came; runners poll every webhook.silent_poll_secs until one arrives. Is the webhook still active in Plane (workspace settings, Webhooks)?"
            );
        }
    }
}

/// Rewrites the textfile with the metrics every `interval` until `stop`:
/// the ledger's side is read on the blocking pool, the file replaced
/// atomically.
async fn rewrite_textfile(
    metrics: Arc<runtime::Metrics>,
    side: runtime::LedgerSide,
    path: PathBuf,
    interval: Duration,
    stop: impl Future<Output = ()>,
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
