//! The sweep a runner does before its first claim.

use std::time::{Duration, Instant};

use ledger_core::Timestamp;

use crate::join::catching_panics;
use crate::{InFlightLedger, ProcessProbe, ScanOptions, ScanReport, StartupLock, TaskLookup};

/// How the start-up sweep runs.
#[derive(Debug, Clone)]
pub struct StartupOptions {
    /// How long to wait for the reconcile lock before going on without
    /// sweeping (another process is sweeping).
    pub lock_timeout: Duration,
    /// The scan's options; `apply` is forced on.
    pub scan: ScanOptions,
}

impl Default for StartupOptions {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(2),
            scan: ScanOptions {
                apply: true,
                ..ScanOptions::default()
            },
        }
    }
}

/// What the start-up sweep did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupOutcome {
    /// This process held the lock and swept.
    Swept(ScanReport),
    /// Another process holds the lock (and is sweeping); nothing was done.
    LockBusy,
    /// The sweep failed; the runner goes on regardless.
    Failed(String),
}

/// The outcome and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupReport {
    /// What happened.
    pub outcome: StartupOutcome,
    /// Wall time from the call to its return.
    pub elapsed: Duration,
}

/// Reclaims what dead runners left behind, once, before this runner claims
/// anything. Takes the reconcile lock (waiting at most
/// [`StartupOptions::lock_timeout`]) so that runners starting together do
/// not all sweep; those that find it busy go on at once.
///
/// It never returns an error and never panics, whatever the traits do: a
/// runner must always come up. Bounding the sweep's total time (Plane may
/// be slow) is the caller's job, with its runtime's timeout, since this
/// crate has no clock of its own.
pub async fn reconcile_on_startup(
    lock: &dyn StartupLock,
    ledger: &dyn InFlightLedger,
    lookup: &dyn TaskLookup,
    probe: &dyn ProcessProbe,
    options: &StartupOptions,
    now: Timestamp,
) -> StartupReport {
    let started = Instant::now();
    let outcome = match catching_panics(sweep(lock, ledger, lookup, probe, options, now)).await {
        Ok(outcome) => outcome,
        Err(panic) => StartupOutcome::Failed(format!("the sweep panicked: {panic}")),
    };
    let elapsed = started.elapsed();
    match &outcome {
        StartupOutcome::Swept(report) => {
            let mut by_rule = std::collections::BTreeMap::<&str, u32>::new();
            for entry in report
                .actions
                .iter()
                .filter(|e| e.action == crate::Action::Applied)
            {
                *by_rule.entry(entry.rule.as_str()).or_default() += 1;
            }
            let reclaimed: u32 = by_rule.values().sum();
            tracing::info!(
                reclaimed,
                ?by_rule,
                errors = report
                    .actions
                    .iter()
                    .filter(|e| e.action == crate::Action::Error)
                    .count(),
                open_slots = report.open_slots,
                plane_requests = report.plane_requests,
                elapsed_ms = elapsed.as_millis() as u64,
                "start-up reconcile"
            );
        }
        StartupOutcome::LockBusy => tracing::info!(
            elapsed_ms = elapsed.as_millis() as u64,
            "start-up reconcile skipped: another process holds the reconcile lock"
        ),
        StartupOutcome::Failed(error) => tracing::warn!(
            %error,
            elapsed_ms = elapsed.as_millis() as u64,
            "start-up reconcile failed; starting anyway"
        ),
    }
    StartupReport { outcome, elapsed }
}

async fn sweep(
    lock: &dyn StartupLock,
    ledger: &dyn InFlightLedger,
    lookup: &dyn TaskLookup,
    probe: &dyn ProcessProbe,
    options: &StartupOptions,
    now: Timestamp,
) -> StartupOutcome {
    // A panic in here, the lock included, is caught by the caller's
    // `catching_panics` and reported as a failed sweep.
    let token = match lock.try_lock(options.lock_timeout) {
        Ok(Some(token)) => token,
        Ok(None) => return StartupOutcome::LockBusy,
        Err(e) => {
            return StartupOutcome::Failed(format!("could not take the reconcile lock: {e}"));
        }
    };
    let scan_options = ScanOptions {
        apply: true,
        ..options.scan.clone()
    };
    let outcome = match crate::scan(ledger, lookup, probe, &scan_options, now).await {
        Ok(report) => StartupOutcome::Swept(report),
        Err(e) => StartupOutcome::Failed(e.to_string()),
    };
    drop(token);
    outcome
}
