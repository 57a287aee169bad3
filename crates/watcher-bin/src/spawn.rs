//! Spawning executors so that they die with their runner.
//!
//! `PR_SET_PDEATHSIG` delivers a signal to the child when the *thread* that
//! forked it exits, not the process. tokio's blocking-pool threads come and
//! go, so an executor spawned from one would be sent SIGTERM when that
//! thread retired, in the middle of a healthy run. Every executor is
//! therefore spawned from one dedicated thread that lives as long as the
//! runner. The runner can also die between `fork` and `prctl`; the child
//! checks its parent afterwards and refuses to start if it is orphaned.

use std::io;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Request {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Spawns commands from the runner's long-lived spawner thread, each in its
/// own process group and set to receive SIGTERM if the runner dies.
#[derive(Debug, Clone)]
pub struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpawnRequest")
    }
}

impl Spawner {
    /// Starts the spawner thread. Must be called inside a tokio runtime,
    /// whose child-process reaper the spawned children join.
    pub fn start() -> io::Result<Self> {
        let handle = tokio::runtime::Handle::current();
        let (requests, inbox) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("executor-spawner".into())
            .spawn(move || {
                let _runtime = handle.enter();
                while let Ok(Request { mut command, reply }) = inbox.recv() {
                    let _ = reply.send(command.spawn());
                }
                // Every sender is gone, so the runner is shutting down. The
                // thread stays until the process ends: its exit would signal
                // any executor still running.
                loop {
                    std::thread::park();
                }
            })?;
        Ok(Self { requests })
    }

    /// Spawns `command` in a new process group with the parent-death signal
    /// set.
    pub async fn spawn(&self, mut command: Command) -> io::Result<Child> {
        let parent = std::process::id();
        command.process_group(0).kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The runner died between fork and prctl: do not run
                // unsupervised.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::other(
                        "the runner exited before the executor started",
                    ));
                }
                Ok(())
            });
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { command, reply })
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }
}

/// Sends `signal` to process group `group`; a group that is gone is fine.
pub fn signal_group(group: u32, signal: i32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    if group > 1 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(-group, signal);
        }
    }
}
