//! `watchdog`'s command line, in the library so that `--help`, man pages
//! and completions come from one definition and tests can read it.

#![allow(missing_docs)] // Documented by clap's doc comments, which are the help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use runtime::LogFormat;

/// Watches inflight's ledger: reclaims slots that dead runners left open, and
/// answers an operator's questions about it.
///
/// Every command shares the ledger with running runners; `status`, `events`,
/// `explain`, `serve` and `metrics` only read it (a missing ledger is an
/// error, nothing is created; a read-only file or mount will do). Reports
/// and listings go to stdout; logs go to stderr.
///
/// Exit status: 0 success, 1 runtime failure, 2 bad usage or configuration.
#[derive(Debug, Parser)]
#[command(name = "watchdog", version = runtime::VERSION)]
pub struct Args {
    /// The configuration file (TOML; see docs/configuration.md).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr; RUST_LOG sets the level.
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// Also serve the read-only web page at http://ADDR/ (as `serve`
        /// does; e.g. 127.0.0.1:9103).
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
    },
    /// Serve the read-only web page alone, until SIGTERM or SIGINT: at
    /// http://ADDR/ the overview (each backend's open slots against its
    /// caps, every slot's task, holder, liveness, lease and run time, the
    /// roles, recent events), at /task/TASK a task's `explain`, and the
    /// same as JSON under /api/ (/api/overview, /api/task/TASK). It
    /// refreshes itself and runs no script. GET and HEAD only. An address
    /// other than loopback needs `[http] token_env` (exit 2 otherwise): every
    /// request must then carry the token (Authorization: Bearer TOKEN, or
    /// the password of HTTP Basic, which a browser asks for).
    Serve {
        /// Where to listen, e.g. 127.0.0.1:9103.
        #[arg(long, value_name = "ADDR")]
        http: std::net::SocketAddr,
    },
    /// Print the ledger's metrics once (open slots, caps, oldest open slot,
    /// starts in the rate windows) in Prometheus' text format.
    Metrics,
    /// Open slots (each task's title, how long it has run, its holder and
    /// whether that is alive, the lease left), and counts against the caps.
    Status {
        /// One JSON object with a `slots` array.
        #[arg(long)]
        json: bool,
        /// Redraw the table in place every SECS seconds (default 2) until
        /// Ctrl-C, on the terminal's alternate screen, which is left as it
        /// was on exit.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        #[arg(value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "json")]
        watch: Option<u64>,
    },
    /// The audit log, oldest first; the filters combine. Exits 1, after
    /// the listing, when records could not be read (listed in place).
    Events {
        /// Only events at or after this time (RFC 3339, e.g.
        /// 2026-11-28T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        #[arg(value_parser = parse_since)]
        since: Option<ledger_core::Timestamp>,
        /// Only this task's events (its work item id).
        #[arg(long, value_name = "TASK")]
        task: Option<String>,
        /// Only this backend's events.
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
        /// Only events of this kind; repeat for several.
        #[arg(long, value_name = "KIND", value_enum)]
        kind: Vec<EventKindFilter>,
        /// Only the newest N of the events that match.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// After the listing, print each new matching event as it is
        /// recorded (looking every 250 ms), until Ctrl-C or SIGTERM.
        #[arg(long)]
        follow: bool,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// A task's history and why it is not running: every admission and
    /// denial (with the cap and its figures), each run's holder, outcomes
    /// and reclaims (with the rule and what it found), then, unless it runs
    /// now, each thing that holds it back: no role claims its state, labels
    /// it lacks, a role waiting for names the project lacks, a full cap (and
    /// the slots holding it), a full rate window (and when the next start is
    /// allowed), attempts used up. Asks Plane where the task stands (state,
    /// labels) and reads the ledger without writing. Exits 1 when Plane
    /// knows no such identifier, or does not answer (after what the ledger
    /// knows); a task the ledger never saw is said so, exit 0.
    Explain {
        /// The task: its identifier (e.g. ROCK-42) or its work item id.
        task: String,
        /// One JSON object.
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
    /// Check the configuration: every backend's command can be started (the
    /// file exists and is executable, or a bare name is found in PATH), and
    /// against Plane: the project answers with this key (and with each
    /// role's own key, roles.NAME.api_key_env), and every role's states and
    /// labels exist there. Exits 2 naming a backend whose command cannot
    /// start, each role key whose name Plane lacks or whose own key the
    /// project refuses; 1 when Plane does not answer.
    CheckConfig {
        /// Check only what needs neither Plane nor the ledger: the key
        /// variables are set, the commands can be started, the ledger's
        /// folder exists. For a unit's ExecStartPre= (a Plane outage must
        /// not keep runners from starting).
        #[arg(long)]
        offline: bool,
    },
    /// Import the reference system's usage.json: rebuilds the open slots and
    /// the event history. Safe to repeat.
    ImportUsageJson {
        /// The usage.json file.
        file: PathBuf,
    },
}

/// `--since`: an RFC 3339 time, refused at parse time (exit status 2).
fn parse_since(text: &str) -> Result<ledger_core::Timestamp, String> {
    ledger_core::Timestamp::parse_rfc3339(text).map_err(|e| e.to_string())
}

/// The kinds of event `events --kind` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventKindFilter {
    /// A slot was opened.
    Started,
    /// A slot was closed (completed, failed, reclaimed, released...).
    Finished,
    /// An admission was refused by a cap.
    Denied,
    /// A record that could not be read.
    Unreadable,
}
