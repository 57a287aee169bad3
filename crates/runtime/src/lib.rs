//! What inflight's two binaries share: the adapters that let the orphan rules of `reconcile` reach
//! the real ledger, its reconcile lock and Plane, putting reclaimed tasks
//! back on the board, and logging. The configuration file is the
//! `inflight-config` crate's and the Linux [`ProcessProbe`] the
//! `process-probe` crate's, both re-exported here.
//!
//! # Example
//!
//! Is this very process alive? (It is.)
//!
//! ```
//! use std::time::Duration;
//! use reconcile::{Liveness, ProcessProbe};
//! use runtime::{HostIdentity, LinuxProcessProbe, this_owner};
//! // The same as `process_probe::{…}`.
//!
//! # fn main() -> std::io::Result<()> {
//! let host = HostIdentity::current()?;
//! let probe = LinuxProcessProbe::new(host.clone(), Duration::from_secs(5));
//! assert_eq!(probe.liveness(&this_owner(&host)?), Liveness::Alive);
//! # Ok(())
//! # }
//! ```
//!
//! [`ProcessProbe`]: reconcile::ProcessProbe

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

mod adapters;
mod logging;
mod notify;
mod shutdown;
mod store;

pub use adapters::{LedgerAdapter, StoreStartupLock};
pub use inflight_config::{
    BackendSettings, CommentPolicy, Config, ConfigError, LedgerSettings, PlaneSettings,
    PostgresSettings, RoleSettings, StopMode, StoreSettings, WatcherSettings, WebhookSettings,
};
pub use inflight_metrics::{
    CLASSIC_CONTENT_TYPE, LedgerSide, Metrics, OPENMETRICS_CONTENT_TYPE, classic, serve_metrics,
    spawn_metrics, write_textfile,
};
pub use logging::{LogFormat, init_logging, report_failure};
pub use notify::{NOTIFY_VARIABLES, Notifier};

/// The binaries' version and the commit they were built from, for
/// `--version`: `0.1.0 (commit 1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("INFLIGHT_COMMIT"),
    ")"
);
pub use plane_fleet::{
    BoardView, DELIVERY_GRACE, SharedBoard, Silence, board_key, decode_hint, decode_items,
    encode_hint, encode_items,
};
pub use plane_fleet::{
    Plane, PlaneFuture, PlaneLookup, Requeue, RoleProblem, check_role, html_escape, lookup_error,
    requeue_reclaimed, state_of,
};
pub use plane_fleet::{RoleFit, StoreBudget, destination, on_store, plane_client, role_fit};
pub use process_probe::{
    HOST_ENV, HostIdentity, LinuxProcessProbe, ProcStat, is_running, proc_stat, signal_group,
    signal_process, terminate_group, this_owner, this_process,
};
pub use shutdown::{Shutdown, run_main};
pub use store::{open_store, open_store_read_only};
