//! What inflight's two binaries share: the Linux [`ProcessProbe`] and the
//! adapters that let the orphan rules of `reconcile` reach the real ledger
//! and its reconcile lock.
//!
//! # Example
//!
//! Is this very process alive? (It is.)
//!
//! ```
//! use std::time::Duration;
//! use reconcile::{Liveness, ProcessProbe};
//! use runtime::{HostIdentity, LinuxProcessProbe, this_owner};
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

mod adapters;
mod process;

pub use adapters::{FileStartupLock, LedgerAdapter};
pub use process::{
    HostIdentity, LinuxProcessProbe, ProcStat, proc_stat, terminate_group, this_owner, this_process,
};
