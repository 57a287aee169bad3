//! What a runner and the watchdog tell Prometheus: counters and
//! histograms kept as things happen (admissions, finishes, reclaims, Plane
//! requests, lease renewals, webhook deliveries, scans), and gauges read
//! from the ledger at each scrape (open slots and caps per backend, the
//! oldest open slot's age, starts in the rate windows, the clock offset to
//! the store).
//!
//! Names follow Prometheus' conventions: the `inflight_` prefix, base units
//! (`_seconds`), `_total` on counters, and labels of low cardinality only
//! (a backend, a rule, a reason, a route; never a task id).
//!
//! Served as the classic text format (`text/plain; version=0.0.4`), which
//! every Prometheus and `promtool` reads, or as OpenMetrics to a scraper
//! that asks for it (`Accept: application/openmetrics-text`).
//!
//! # Example
//!
//! ```
//! let metrics = inflight_metrics::Metrics::new();
//! metrics.admitted("local", std::time::Duration::from_millis(3));
//! let text = metrics.render(false);
//! assert!(text.contains("inflight_admissions_total{backend=\"local\",outcome=\"admitted\",reason=\"\"} 1"));
//! ```

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

mod serve;

pub use serve::{serve_metrics, spawn_metrics, write_textfile};

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::{Denial, EventKind, FinishReason, LedgerStore, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use inflight_config::Config;

/// The content type of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    backend: String,
    outcome: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    backend: String,
    window: String,
}

type Seconds = Gauge<f64, AtomicU64>;

/// What becomes of a webhook delivery (`inflight_webhook_deliveries_total`).
pub const WEBHOOK_VERDICTS: &[&str] = &[
    "hinted",
    "ignored",
    "repeated",
    "unauthorized",
    "malformed",
    "too_large",
    "failed",
];
type Histograms = Family<BackendLabel, Histogram, fn() -> Histogram>;

fn slot_buckets() -> Histogram {
    // 1 s to about 18 hours.
    Histogram::new(exponential_buckets(1.0, 2.0, 17))
}

/// A process's metrics. Cheap to update from any thread.
pub struct Metrics {
    /// What this process counts.
    registry: Registry,
    /// What is read from the ledger at each scrape (`watchdog metrics`).
    ledger: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    finishes: Family<ReasonLabel, Counter>,
    reclaims: Family<RuleLabel, Counter>,
    slot_seconds: Histograms,
    admit_seconds: Histogram,
    plane_requests: Family<RequestLabels, Counter>,
    plane_rate_limited: Counter,
    budget_remaining: Gauge,
    renewals: Family<OutcomeLabel, Counter>,
    clock_offset: Seconds,
    webhooks: Family<VerdictLabel, Counter>,
    scan_seconds: Histogram,
    scan_failures: Counter,
    scan_misconfigured: Gauge,
    slots_open: Family<BackendLabel, Gauge>,
    slots_max: Family<BackendLabel, Gauge>,
    global_slots_max: Gauge,
    oldest_open: Family<BackendLabel, Seconds>,
    window_starts: Family<WindowLabels, Gauge>,
    dead_owner: Family<BackendLabel, Gauge>,
    window_seconds: Gauge,
    webhook_listening: Gauge,
    webhook_silent: Gauge,
    errors: Family<WhatLabel, Counter>,
    last_progress: Gauge,
    follower: Mutex<Follower>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The starts of the last day, followed through the audit log.
#[derive(Debug, Default)]
struct Follower {
    /// The newest event read (`None`: not started).
    seq: Option<u64>,
    starts: VecDeque<(Timestamp, String)>,
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Arc<Self> {
        let mut r = Registry::with_prefix("inflight");
        let mut l = Registry::with_prefix("inflight");
        let admissions = Family::default();
        r.register(
            "admissions",
            "Admissions, by outcome and the denial's reason",
            admissions.clone(),
        );
        let finishes = Family::default();
        r.register("finishes", "Slots finished, by reason", finishes.clone());
        let reclaims = Family::default();
        r.register(
            "reclaims",
            "Slots reclaimed by the orphan rules, by rule",
            reclaims.clone(),
        );
        let slot_seconds: Histograms = Family::new_with_constructor(slot_buckets);
        r.register(
            "slot_duration_seconds",
            "How long slots were held, from admission to finish",
            slot_seconds.clone(),
        );
        let admit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        r.register(
            "admit_duration_seconds",
            "How long an admission took in the store",
            admit_seconds.clone(),
        );
        let plane_requests = Family::default();
        r.register(
            "plane_requests",
            "Requests to Plane, by method, route and status (0: no answer)",
            plane_requests.clone(),
        );
        let plane_rate_limited = Counter::default();
        r.register(
            "plane_rate_limited",
            "Plane answers of 429 Too Many Requests",
            plane_rate_limited.clone(),
        );
        let budget_remaining = Gauge::default();
        r.register(
            "plane_budget_remaining",
            "Requests left in the key's shared window at the last take",
            budget_remaining.clone(),
        );
        let renewals = Family::default();
        r.register(
            "lease_renewals",
            "Lease renewals, by outcome (ok, failed)",
            renewals.clone(),
        );
        let clock_offset = Seconds::default();
        l.register(
            "store_clock_offset_seconds",
            "The store's clock minus this host's (0 for redb)",
            clock_offset.clone(),
        );
        let webhooks = Family::default();
        r.register(
            "webhook_deliveries",
            "Webhook deliveries, by verdict",
            webhooks.clone(),
        );
        let scan_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        r.register(
            "scan_duration_seconds",
            "How long an orphan scan took",
            scan_seconds.clone(),
        );
        let errors = Family::default();
        r.register(
            "errors",
            "Failures of a runner's work, by what failed (dispatch, board)",
            errors.clone(),
        );
        let last_progress = Gauge::default();
        r.register(
            "runner_last_progress_timestamp_seconds",
            "When the runner last completed a look at the board and what followed without a failure (Unix time)",
            last_progress.clone(),
        );
        let scan_failures = Counter::default();
        r.register(
            "scan_failures",
            "Scans that failed or were incomplete",
            scan_failures.clone(),
        );
        let scan_misconfigured = Gauge::default();
        r.register(
            "scan_suspected_misconfiguration",
            "1 when the last scan suspected a wrong project or base URL",
            scan_misconfigured.clone(),
        );
        let slots_open = Family::default();
        l.register("slots_open", "Open slots, by backend", slots_open.clone());
        let slots_max = Family::default();
        l.register(
            "slots_max",
            "The backend's cap (max_concurrent)",
            slots_max.clone(),
        );
        let global_slots_max = Gauge::default();
        l.register(
            "global_slots_max",
            "The global cap ([limits] max_concurrent; 0: none)",
            global_slots_max.clone(),
        );
        let oldest_open = Family::default();
        l.register(
            "oldest_open_slot_age_seconds",
            "Age of the backend's oldest open slot (0: none open)",
            oldest_open.clone(),
        );
        let window_starts = Family::default();
        l.register(
            "window_starts",
            "Starts within the rate windows (hour, day), by backend",
            window_starts.clone(),
        );
        l.register(
            "build",
            "inflight's version",
            Info::new(vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
        );
        // Known series start at zero, so that a rate() or an alert sees
        // the first one happen (and every family is there from the start).
        for reason in [
            "completed",
            "failed",
            "interrupted",
            "reconciled",
            "released_by_operator",
            "expired",
            "not_started",
        ] {
            let _ = finishes.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for rule in [
            reconcile::Rule::DeadOwnerClear,
            reconcile::Rule::OrphanedInFlightClear,
            reconcile::Rule::StaleInFlightExpire,
            reconcile::Rule::LeaseExpiredClear,
        ] {
            let _ = reclaims.get_or_create(&RuleLabel {
                rule: rule.as_str().into(),
            });
        }
        for outcome in ["ok", "failed"] {
            let _ = renewals.get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            });
        }
        for verdict in WEBHOOK_VERDICTS {
            let _ = webhooks.get_or_create(&VerdictLabel {
                verdict: (*verdict).into(),
            });
        }
        let dead_owner = Family::default();
        l.register(
            "slots_dead_owner",
            "Open slots whose owner ran on this host and is dead (reclaimable by DEAD_OWNER_CLEAR)",
            dead_owner.clone(),
        );
        let window_seconds = Gauge::default();
        l.register(
            "slot_window_seconds",
            "The stale window ([ledger] window_hours): a slot older than this whose owner is not known alive expires",
            window_seconds.clone(),
        );
        let webhook_listening = Gauge::default();
        r.register(
            "webhook_listening",
            "1 when this process receives Plane's webhooks",
            webhook_listening.clone(),
        );
        let webhook_silent = Gauge::default();
        r.register(
            "webhook_silent",
            "1 while webhook deliveries are being missed: a task entered a claim state and no delivery named it (Plane set the webhook inactive, or gave up on a receiver that was down)",
            webhook_silent.clone(),
        );
        Arc::new(Self {
            registry: r,
            ledger: l,
            admissions,
            finishes,
            reclaims,
            slot_seconds,
            admit_seconds,
            plane_requests,
            plane_rate_limited,
            budget_remaining,
            renewals,
            clock_offset,
            webhooks,
            scan_seconds,
            scan_failures,
            scan_misconfigured,
            slots_open,
            slots_max,
            global_slots_max,
            oldest_open,
            window_starts,
            dead_owner,
            window_seconds,
            webhook_listening,
            webhook_silent,
            errors,
            last_progress,
            follower: Mutex::new(Follower::default()),
        })
    }

    /// An admission to `backend`, and how long the store took.
    pub fn admitted(&self, backend: &str, took: Duration) {
        self.admission(backend, "admitted", "", took);
    }

    /// A denial, and how long the store took.
    pub fn denied(&self, backend: &str, denial: &Denial, took: Duration) {
        self.admission(backend, "denied", denial.reason.as_str(), took);
    }

    fn admission(&self, backend: &str, outcome: &str, reason: &str, took: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                backend: backend.into(),
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc();
        self.admit_seconds.observe(took.as_secs_f64());
    }

    /// Known series of `backend` at zero, so that a rate() or an alert sees
    /// the first one happen.
    fn known_series(&self, backend: &str) {
        for (outcome, reason) in [
            ("admitted", ""),
            ("denied", "global_concurrency_exceeded"),
            ("denied", "backend_concurrency_exceeded"),
            ("denied", "backend_rate_exceeded"),
            ("denied", "already_in_flight"),
        ] {
            let _ = self.admissions.get_or_create(&AdmissionLabels {
                backend: backend.into(),
                outcome: outcome.into(),
                reason: reason.into(),
            });
        }
        let _ = self.slot_seconds.get_or_create(&BackendLabel {
            backend: backend.into(),
        });
    }

    /// A failure of `what` (`dispatch`, `board`): the runner's work did
    /// not get done this time.
    pub fn error(&self, what: &str) {
        self.errors
            .get_or_create(&WhatLabel { what: what.into() })
            .inc();
    }

    /// The runner completed a cycle of its work (a look at the board and
    /// what followed) without a failure, at `now`.
    pub fn progressed(&self, now: std::time::SystemTime) {
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_progress
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// Says this process receives webhooks.
    pub fn webhooks_listening(&self) {
        self.webhook_listening.set(1);
    }

    /// Says whether webhook deliveries are being missed.
    pub fn webhooks_silent(&self, silent: bool) {
        self.webhook_silent.set(i64::from(silent));
    }

    /// A slot of `backend` finished for `reason`, held for `held`.
    pub fn finished(&self, backend: &str, reason: FinishReason, held: Duration) {
        // Its name as the audit log writes it (`{"reason": "completed"}`).
        let reason = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
            .unwrap_or_default();
        self.finishes.get_or_create(&ReasonLabel { reason }).inc();
        self.slot_seconds
            .get_or_create(&BackendLabel {
                backend: backend.into(),
            })
            .observe(held.as_secs_f64());
    }

    /// A slot reclaimed by `rule`.
    pub fn reclaimed(&self, rule: reconcile::Rule) {
        self.reclaims
            .get_or_create(&RuleLabel {
                rule: rule.as_str().into(),
            })
            .inc();
    }

    /// The reclaims a scan applied.
    pub fn reclaimed_in(&self, report: &reconcile::ScanReport) {
        for action in &report.actions {
            if action.action == reconcile::Action::Applied {
                self.reclaimed(action.rule);
            }
        }
    }

    /// A scan that ran, how long it took, and whether it failed.
    pub fn scanned(&self, took: Duration, report: Option<&reconcile::ScanReport>) {
        self.scan_seconds.observe(took.as_secs_f64());
        match report {
            Some(report) => {
                if report.failure().is_some() {
                    self.scan_failures.inc();
                }
                self.scan_misconfigured
                    .set(i64::from(report.suspected_misconfiguration));
                self.reclaimed_in(report);
            }
            None => {
                self.scan_failures.inc();
            }
        }
    }

    /// A lease renewal that reached the store (`ok`) or did not.
    pub fn renewal(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.renewals
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A webhook delivery and what became of it (`hinted`, `ignored`,
    /// `repeated`, `unauthorized`, `malformed`, `too_large`, `failed`).
    pub fn webhook(&self, verdict: &str) {
        self.webhooks
            .get_or_create(&VerdictLabel {
                verdict: verdict.into(),
            })
            .inc();
    }

    /// How deliveries with `verdict` were counted so far.
    pub fn webhooks_with(&self, verdict: &str) -> u64 {
        self.webhooks
            .get_or_create(&VerdictLabel {
                verdict: verdict.into(),
            })
            .get()
    }

    /// What the key's shared window had left at the last take.
    pub fn budget_left(&self, remaining: i64) {
        self.budget_remaining.set(remaining);
    }

    /// Reads the ledger's side: open slots, caps, oldest open slot, starts
    /// in the rate windows, the store's clock. Blocks (store calls): call
    /// it on a blocking thread.
    pub fn refresh(
        &self,
        store: &dyn LedgerStore,
        config: &Config,
        probe: Option<&dyn reconcile::ProcessProbe>,
        now: Timestamp,
    ) -> ledger_core::Result<()> {
        // The configured figures first: a store that cannot be read must
        // not make a cap look like 0 ("none").
        for (name, backend) in &config.backends {
            self.known_series(name);
            self.slots_max
                .get_or_create(&BackendLabel {
                    backend: name.clone(),
                })
                .set(i64::from(backend.limits.max_concurrent));
        }
        self.global_slots_max
            .set(config.global_max_concurrent.map_or(0, i64::from));
        self.window_seconds
            .set(i64::try_from(config.ledger.window.as_secs()).unwrap_or(i64::MAX));
        let slots = store.open_slots()?;
        /// One backend's open slots, as the ledger has them.
        #[derive(Default)]
        struct Held {
            open: i64,
            dead: i64,
            oldest: Option<Timestamp>,
        }
        // Every configured backend is reported, with none open too.
        let mut held: BTreeMap<String, Held> = config
            .backends
            .keys()
            .map(|b| (b.clone(), Held::default()))
            .collect();
        for slot in &slots {
            let entry = held
                .entry(slot.key.backend.as_str().to_owned())
                .or_default();
            entry.open += 1;
            entry.oldest = Some(
                entry
                    .oldest
                    .map_or(slot.started_at, |t| t.min(slot.started_at)),
            );
            if probe.is_some_and(|p| {
                matches!(p.liveness(&slot.owner), reconcile::Liveness::Dead { .. })
            }) {
                entry.dead += 1;
            }
        }
        for (backend, held) in held {
            let label = BackendLabel { backend };
            self.slots_open.get_or_create(&label).set(held.open);
            self.dead_owner.get_or_create(&label).set(held.dead);
            let age = held
                .oldest
                .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            self.oldest_open.get_or_create(&label).set(age);
        }
        let store_now = store.now(now)?;
        let offset = store_now.as_unix_millis() - now.as_unix_millis();
        self.clock_offset.set(offset as f64 / 1000.0);
        self.follow_starts(store, config, store_now)
    }

    fn follow_starts(
        &self,
        store: &dyn LedgerStore,
        config: &Config,
        now: Timestamp,
    ) -> ledger_core::Result<()> {
        const DAY: Duration = Duration::from_secs(86_400);
        const HOUR: Duration = Duration::from_secs(3600);
        let mut follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        let events = match follower.seq {
            // The first time, the day's events; then only what is new.
            None => store.events_between(now.saturating_sub(DAY), now.saturating_add(HOUR))?,
            Some(seq) => store.events_after(seq, 100_000)?,
        };
        let mut newest = follower.seq.unwrap_or(0);
        for event in events {
            newest = newest.max(event.seq);
            if let EventKind::Started { key, .. } = &event.kind {
                follower
                    .starts
                    .push_back((event.at, key.backend.as_str().to_owned()));
            }
        }
        follower.seq = Some(newest);
        let day_ago = now.saturating_sub(DAY);
        while follower
            .starts
            .front()
            .is_some_and(|(at, _)| *at <= day_ago)
        {
            follower.starts.pop_front();
        }
        let hour_ago = now.saturating_sub(HOUR);
        for backend in config.backends.keys() {
            let (mut hour, mut day) = (0, 0);
            for (at, b) in &follower.starts {
                if b == backend {
                    day += 1;
                    hour += i64::from(*at > hour_ago);
                }
            }
            for (window, n) in [("hour", hour), ("day", day)] {
                self.window_starts
                    .get_or_create(&WindowLabels {
                        backend: backend.clone(),
                        window: window.into(),
                    })
                    .set(n);
            }
        }
        Ok(())
    }

    /// The metrics as text: OpenMetrics when `openmetrics`, else the
    /// classic format.
    pub fn render(&self, openmetrics: bool) -> String {
        self.encode(&[&self.registry, &self.ledger], openmetrics)
    }

    /// Only what is read from the ledger (`watchdog metrics`).
    pub fn render_ledger(&self, openmetrics: bool) -> String {
        self.encode(&[&self.ledger], openmetrics)
    }

    fn encode(&self, registries: &[&Registry], openmetrics: bool) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::new();
        for registry in registries {
            if encode_registry(&mut text, registry).is_err() {
                return String::new();
            }
        }
        if encode_eof(&mut text).is_err() {
            return String::new();
        }
        if openmetrics { text } else { classic(&text) }
    }
}

impl plane_client::RequestObserver for Metrics {
    fn observed(&self, method: &str, endpoint: &str, status: u16) {
        self.plane_requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                endpoint: endpoint.into(),
                status: status.to_string(),
            })
            .inc();
        if status == 429 {
            self.plane_rate_limited.inc();
        }
    }
}

/// OpenMetrics text as the classic text format: a counter family is named
/// with its `_total` (older `promtool`s refuse a `_total` sample under a
/// family named without it), an info family becomes a gauge named with
/// `_info`, and the `# UNIT` and `# EOF` lines go.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut i = 0;
    while let Some(line) = lines.get(i) {
        i += 1;
        if *line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = lines
                .get(i)
                .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap_or("");
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                other => (name.to_owned(), other),
            };
            out.push_str(&format!("# HELP {name} {help}\n"));
            if !kind.is_empty() {
                out.push_str(&format!("# TYPE {name} {kind}\n"));
                i += 1;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_infos_are_renamed_for_the_classic_format() {
        let open = "# HELP inflight_finishes Slots finished.\n# TYPE inflight_finishes counter\ninflight_finishes_total{reason=\"completed\"} 2\n# HELP inflight_build inflight's version.\n# TYPE inflight_build info\ninflight_build_info{version=\"0.1.0\"} 1\n# HELP inflight_slots_open Open slots.\n# TYPE inflight_slots_open gauge\ninflight_slots_open{backend=\"a\"} 1\n# EOF\n";
        assert_eq!(
            classic(open),
            "# HELP inflight_finishes_total Slots finished.\n# TYPE inflight_finishes_total counter\ninflight_finishes_total{reason=\"completed\"} 2\n# HELP inflight_build_info inflight's version.\n# TYPE inflight_build_info gauge\ninflight_build_info{version=\"0.1.0\"} 1\n# HELP inflight_slots_open Open slots.\n# TYPE inflight_slots_open gauge\ninflight_slots_open{backend=\"a\"} 1\n"
        );
    }
}

/// Where a scrape reads the ledger's side from.
#[derive(Clone)]
pub struct LedgerSide {
    /// The store.
    pub store: Arc<dyn LedgerStore>,
    /// The configuration (backends and caps).
    pub config: Config,
    /// The clock.
    pub clock: Arc<dyn ledger_core::Clock>,
    /// Whether a slot's owner (on this host) is alive, for
    /// `inflight_slots_dead_owner`.
    pub probe: Option<Arc<dyn reconcile::ProcessProbe>>,
}

impl std::fmt::Debug for LedgerSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSide")
            .field("store", &self.store.location())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Refreshes the ledger's side (on the blocking pool) and renders; a
    /// store that fails is logged, and the process's own metrics are
    /// rendered all the same.
    pub async fn scrape(self: &Arc<Self>, side: Option<&LedgerSide>, openmetrics: bool) -> String {
        if let Some(side) = side {
            let (metrics, side) = (self.clone(), side.clone());
            let refreshed = tokio::task::spawn_blocking(move || {
                let now = side.clock.now();
                ledger_core::blocking::may_block(|| {
                    metrics.refresh(&*side.store, &side.config, side.probe.as_deref(), now)
                })
            })
            .await;
            match refreshed {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "metrics: could not read the ledger"),
                Err(error) => tracing::warn!(%error, "metrics: the ledger read did not finish"),
            }
        }
        self.render(openmetrics)
    }
}
