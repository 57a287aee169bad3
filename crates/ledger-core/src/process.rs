//! The calling process as a slot's holder records it: this host's identity
//! (its name, or `INFLIGHT_HOST`, and its boot id) and a process's pid and
//! start time, read from Linux's `/proc` (feature `process`).
//!
//! A pid alone proves nothing: pids are reused. A process is identified by
//! its pid *and* its start time (field 22 of `/proc/<pid>/stat`, clock ticks
//! since boot), on a given boot (`/proc/sys/kernel/random/boot_id`) of a
//! given host. A wrong start time would make a live holder look dead and
//! get its slot reclaimed, so nothing here ever guesses: a failed read is an
//! error.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! // The holder of a slot this process admits.
//! let owner = ledger_core::Owner::current()?;
//! assert_eq!(owner.runner.pid, std::process::id());
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io;

use crate::{Owner, ProcessIdentity};

/// `ESRCH` on Linux: the process exited between listing and reading.
const ESRCH: i32 = 3;

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
        Err(e) if e.raw_os_error() == Some(ESRCH) => return Ok(None),
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
    let after = text.get(text.rfind(')')? + 1..)?;
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

/// The owner record for a slot taken by the calling process on `host`.
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
        title: None,
    })
}

impl Owner {
    /// The owner record for a slot taken by the calling process on this
    /// host: [`HostIdentity::current`] and [`this_process`].
    pub fn current() -> io::Result<Self> {
        this_owner(&HostIdentity::current()?)
    }
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

    #[test]
    fn the_current_owner_is_this_process_as_proc_knows_it() {
        let owner = Owner::current().unwrap();
        assert_eq!(owner.runner.pid, std::process::id());
        let stat = proc_stat(std::process::id()).unwrap().unwrap();
        assert_eq!(owner.runner.start_time, stat.start_time);
        assert!(!owner.boot_id.is_empty() && !owner.host.is_empty());
        assert_eq!(owner.keeper, None);
    }
}
