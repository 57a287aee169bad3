//! The Linux process probe: is a slot's owner alive, and terminating what is
//! left of a dead executor's process group.
//!
//! A pid alone proves nothing: pids are reused. A process is identified by
//! its pid *and* its start time (field 22 of `/proc/<pid>/stat`, clock ticks
//! since boot), on a given boot (`/proc/sys/kernel/random/boot_id`) of a
//! given host. Only an owner recorded on this host can be judged dead from
//! here; any other owner is "unknown", never "dead".

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use ledger_core::{ExecutorIdentity, Owner, ProcessIdentity};
use reconcile::{EdgeError, Liveness, ProcessProbe, TerminateOutcome};

/// The environment variable that overrides the host name slots record:
/// containers have random host names, and tests run several "hosts" on one
/// machine.
pub const HOST_ENV: &str = "INFLIGHT_HOST";

/// This machine's identity as a slot owner records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// `/proc/sys/kernel/hostname`.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

impl HostIdentity {
    /// Reads this host's name (or [`HOST_ENV`], when set and not blank)
    /// and boot id.
    pub fn current() -> io::Result<Self> {
        let named = std::env::var(HOST_ENV)
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        let host = match named {
            Some(host) => host,
            None => read_trimmed("/proc/sys/kernel/hostname")?,
        };
        Ok(Self {
            host,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id")?,
        })
    }
}

fn read_trimmed(path: &str) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

/// The fields of `/proc/<pid>/stat` the probe needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: R, S, D, Z (zombie), T, …
    pub state: char,
    /// Field 5: the process group.
    pub process_group: u32,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat`. `Ok(None)` when no such process exists.
pub fn proc_stat(pid: u32) -> io::Result<Option<ProcStat>> {
    let text = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // The process exited between listing and reading.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_stat(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/stat"),
        )
    })
}

/// Parses a stat line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        process_group: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The identity of the calling process.
pub fn this_process() -> io::Result<ProcessIdentity> {
    let pid = std::process::id();
    let stat = proc_stat(pid)?.ok_or_else(|| io::Error::other("/proc/self/stat is missing"))?;
    Ok(ProcessIdentity {
        pid,
        start_time: stat.start_time,
    })
}

/// The owner record for a slot taken by the calling process.
pub fn this_owner(host: &HostIdentity) -> io::Result<Owner> {
    Ok(Owner {
        host: host.host.clone(),
        boot_id: host.boot_id.clone(),
        runner: this_process()?,
        executor: None,
        role: None,
        project: None,
        keeper: None,
        outcome: None,
    })
}

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
    match proc_stat(process.pid)? {
        Some(stat)
            if stat.start_time == process.start_time && stat.state != 'Z' && stat.state != 'X' => {}
        _ => return Ok(false),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_command_names_parse() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                process_group: 4242,
                start_time: 987654
            }
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }
}
