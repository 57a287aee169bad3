//! The Linux process probe: whether a slot's holder is alive, and stopping
//! what is left of a dead executor's process group. It is the orphan rules'
//! [`ProcessProbe`] edge on Linux, and the signals the runner, its keepers
//! and the watchdog send.
//!
//! A pid alone proves nothing: pids are reused. A process is identified by
//! its pid *and* its start time (field 22 of `/proc/<pid>/stat`, clock ticks
//! since boot), on a given boot (`/proc/sys/kernel/random/boot_id`) of a
//! given host. Only a holder recorded on this host can be judged dead from
//! here; any other is "unknown", never "dead". The identity of the calling
//! process is `ledger_core`'s (feature `process`), re-exported here.
//!
//! # Example
//!
//! Is this very process alive? (It is.)
//!
//! ```
//! use std::time::Duration;
//! use process_probe::{HostIdentity, LinuxProcessProbe, this_owner};
//! use reconcile::{Liveness, ProcessProbe};
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

use std::fs;
use std::io;
use std::time::{Duration, Instant};

pub use ledger_core::process::{
    HOST_ENV, HostIdentity, ProcStat, proc_stat, this_owner, this_process,
};
use ledger_core::{ExecutorIdentity, Owner, ProcessIdentity};
use reconcile::{EdgeError, Liveness, ProcessProbe, TerminateOutcome};

/// What became of one recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessFate {
    Running,
    Gone,
    /// A zombie has exited; it only waits for its parent to reap it.
    Exited,
    Reused,
}

fn fate(process: &ProcessIdentity) -> io::Result<ProcessFate> {
    Ok(match proc_stat(process.pid)? {
        None => ProcessFate::Gone,
        Some(stat) if stat.start_time != process.start_time => ProcessFate::Reused,
        Some(stat) if stat.state == 'Z' || stat.state == 'X' => ProcessFate::Exited,
        Some(_) => ProcessFate::Running,
    })
}

/// Whether `process` still runs as that process: its pid not gone, not
/// reused by another process, not a zombie.
pub fn is_running(process: &ProcessIdentity) -> io::Result<bool> {
    Ok(fate(process)? == ProcessFate::Running)
}

fn describe(role: &str, process: &ProcessIdentity, fate: ProcessFate) -> String {
    match fate {
        ProcessFate::Running => format!("{role} pid {} is running", process.pid),
        ProcessFate::Gone => format!("{role} pid {} is gone", process.pid),
        ProcessFate::Exited => format!("{role} pid {} has exited", process.pid),
        ProcessFate::Reused => format!("{role} pid {} now belongs to another process", process.pid),
    }
}

/// The probe for Linux hosts.
#[derive(Debug, Clone)]
pub struct LinuxProcessProbe {
    host: HostIdentity,
    grace: Duration,
}

impl LinuxProcessProbe {
    /// A probe for owners on `host`; survivors of a dead executor's group get
    /// `grace` between SIGTERM and SIGKILL.
    pub fn new(host: HostIdentity, grace: Duration) -> Self {
        Self { host, grace }
    }

    /// A probe for this host.
    pub fn for_this_host(grace: Duration) -> io::Result<Self> {
        Ok(Self::new(HostIdentity::current()?, grace))
    }

    fn judge(&self, owner: &Owner) -> io::Result<Liveness> {
        if owner.host != self.host.host {
            return Ok(Liveness::Unknown {
                why: format!("owner ran on host {:?}, not this one", owner.host),
            });
        }
        if owner.boot_id != self.host.boot_id {
            return Ok(Liveness::Dead {
                why: format!("host {} has rebooted since the owner ran", owner.host),
            });
        }
        let mut reasons = Vec::new();
        let runner = fate(&owner.runner)?;
        if runner == ProcessFate::Running {
            return Ok(Liveness::Alive);
        }
        reasons.push(describe("runner", &owner.runner, runner));
        if let Some(executor) = &owner.executor {
            let fate = fate(&executor.process)?;
            if fate == ProcessFate::Running {
                return Ok(Liveness::Alive);
            }
            reasons.push(describe("executor", &executor.process, fate));
        }
        Ok(Liveness::Dead {
            why: reasons.join("; "),
        })
    }
}

impl ProcessProbe for LinuxProcessProbe {
    fn liveness(&self, owner: &Owner) -> Liveness {
        self.judge(owner).unwrap_or_else(|e| Liveness::Unknown {
            why: format!("could not read the process table: {e}"),
        })
    }

    fn terminate_group(&self, executor: &ExecutorIdentity) -> Result<TerminateOutcome, EdgeError> {
        terminate_group(executor, self.grace).map_err(|e| {
            EdgeError(format!(
                "process group {} of executor pid {}: {e}",
                executor.process_group, executor.process.pid
            ))
        })
    }
}

/// Members of process group `group` still running (zombies excluded).
fn group_members(group: u32) -> io::Result<Vec<(u32, ProcStat)>> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(stat) = proc_stat(pid)?
            && stat.process_group == group
            && stat.state != 'Z'
            && stat.state != 'X'
        {
            members.push((pid, stat));
        }
    }
    Ok(members)
}

/// Sends `signal` to every process of process group `group`. A group that is
/// gone already is not an error; groups 0 and 1 are refused (they would be
/// this process's own group, or every process).
pub fn signal_group(group: u32, signal: i32) -> io::Result<()> {
    let group = libc::pid_t::try_from(group)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "process group out of range"))?;
    if group <= 1 {
        // kill(-1) would signal every process; kill(-0) our own group.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal process group 0 or 1",
        ));
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(-group, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Sends `signal` to `process` if it still runs as that process (same pid
/// and start time, not a zombie); whether it was signalled. A reused pid is
/// never signalled.
pub fn signal_process(process: &ProcessIdentity, signal: i32) -> io::Result<bool> {
    if !is_running(process)? {
        return Ok(false);
    }
    let pid = libc::pid_t::try_from(process.pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pid 0 or 1",
        ));
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// SIGTERM, `grace`, SIGKILL for whatever is left of `executor`'s group.
///
/// Linux never hands out a pid while a process still uses it as its process
/// group, so a member of the group is either a survivor of the executor's
/// group or, if the group id has been reused, a member of a new group whose
/// leader has the same pid with a different start time. The latter is left
/// alone.
pub fn terminate_group(
    executor: &ExecutorIdentity,
    grace: Duration,
) -> io::Result<TerminateOutcome> {
    let group = executor.process_group;
    let members = group_members(group)?;
    if members.is_empty() {
        return Ok(TerminateOutcome::NothingLeft);
    }
    let reused = members.iter().any(|(pid, stat)| {
        *pid == group
            && *pid == executor.process.pid
            && stat.start_time != executor.process.start_time
    });
    if reused {
        tracing::warn!(
            group,
            "process group id now belongs to another process; not signalled"
        );
        return Ok(TerminateOutcome::NothingLeft);
    }
    tracing::info!(
        group,
        survivors = members.len(),
        "terminating what is left of a dead executor's process group"
    );
    signal_group(group, libc::SIGTERM)?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if group_members(group)?.is_empty() {
            return Ok(TerminateOutcome::Terminated);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(group, libc::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if group_members(group)?.is_empty() {
            return Ok(TerminateOutcome::Killed);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io::Error::other("survivors outlived SIGKILL"))
}
