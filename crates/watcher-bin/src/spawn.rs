//! Spawning executors so that they die with their runner.
//!
//! `PR_SET_PDEATHSIG` delivers a signal to the child when the *thread* that
//! forked it exits, not the process. tokio's blocking-pool threads come and
//! go, so an executor spawned from one would be sent SIGTERM when that
//! thread retired, in the middle of a healthy run. Every executor is
//! therefore spawned from one dedicated thread that lives as long as the
//! runner. The runner can also die between `fork` and `prctl`; the child
//! checks its parent afterwards and refuses to start if it is orphaned.
//!
//! An executor must also never run before its slot records it: a runner
//! killed in between would leave a slot that names no process group, and
//! whatever the executor had started by then would outlive the reclaim and
//! keep working on a task that is handed out again. So the child does not
//! exec the executor straight away: it execs this runner's own binary as a
//! *start gate* ([`run_exec_gate_if_asked`]), which waits on a pipe. The
//! runner records the child's pid (the same before and after the gate's
//! exec) and then opens the gate; if the runner dies first, the pipe's write
//! end closes with it and the gate exits without starting anything.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Request {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The argument that makes a runner's binary act as an executor's start
/// gate. Not for people: `--help` does not list it.
pub const EXEC_GATE_ARG: &str = "--inflight-exec-gate";

/// The file descriptor on which the start gate waits for the runner's go.
const GATE_FD: i32 = 3;

/// Exit status of a gate whose runner ended before opening it.
const GATE_ABANDONED: u8 = 125;
/// Exit status of a gate that could not exec the executor (as a shell's).
const GATE_EXEC_FAILED: u8 = 127;

/// Spawns commands from the runner's long-lived spawner thread, each in its
/// own process group, set to receive SIGTERM if the runner dies, and held
/// at a start gate until the runner opens it.
#[derive(Debug, Clone)]
pub struct Spawner {
    requests: mpsc::Sender<Request>,
    gate_program: PathBuf,
}

/// An executor that has been spawned but waits at its start gate. Dropping
/// it without [`StartGate::open`] makes the executor exit without running.
#[derive(Debug)]
pub struct StartGate {
    write_end: io::PipeWriter,
}

impl StartGate {
    /// Lets the executor start.
    pub fn open(mut self) -> io::Result<()> {
        self.write_end.write_all(b"1")
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpawnRequest")
    }
}

impl Spawner {
    /// Starts the spawner thread. Must be called inside a tokio runtime,
    /// whose child-process reaper the spawned children join, by a binary
    /// whose `main` calls [`run_exec_gate_if_asked`] first: that binary is
    /// the start gate of every executor.
    pub fn start() -> io::Result<Self> {
        Self::start_with_gate(std::env::current_exe()?)
    }

    /// Like [`Spawner::start`], with `gate_program` as the start gate: any
    /// binary whose `main` calls [`run_exec_gate_if_asked`] first.
    pub fn start_with_gate(gate_program: PathBuf) -> io::Result<Self> {
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
        Ok(Self {
            requests,
            gate_program,
        })
    }

    /// A command that runs `program` with `args` behind a start gate; add
    /// the environment, folder and stdio, then [`Spawner::spawn`] it.
    /// `program` is looked up on `PATH` here, so a missing program is an
    /// error of the spawn, not an exit status of the gate.
    pub fn command(&self, program: &Path, args: &[String]) -> io::Result<Command> {
        let resolved = resolve_program(program)?;
        let mut command = Command::new(&self.gate_program);
        // The executor's argv[0] stays the name the configuration gave.
        command
            .arg(EXEC_GATE_ARG)
            .arg(resolved)
            .arg(program)
            .args(args);
        Ok(command)
    }

    /// Spawns a [`Spawner::command`] in a new process group with the
    /// parent-death signal set. The executor waits at its gate until the
    /// returned [`StartGate`] is opened.
    pub async fn spawn(&self, mut command: Command) -> io::Result<(Child, StartGate)> {
        let parent = std::process::id();
        // std's pipes are close-on-exec at both ends, so no other child
        // inherits the write end and keeps a dead runner's gate from closing.
        let (read_end, write_end) = io::pipe()?;
        let gate_read = read_end.as_raw_fd();
        command.process_group(0).kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec, only
        // makes async-signal-safe calls (prctl, getppid, dup2, fcntl) and
        // builds its errors from raw OS codes, which allocate nothing.
        unsafe {
            command.pre_exec(move || {
                // The gate reads its go on GATE_FD. dup2 clears close-on-exec
                // on the copy; if the pipe already sits there, clear it by
                // hand.
                let moved = if gate_read == GATE_FD {
                    libc::fcntl(GATE_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(gate_read, GATE_FD)
                };
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The runner died between fork and prctl: do not run
                // unsupervised. (A raw OS error: nothing here may allocate.)
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = self.on_spawner_thread(command).await?;
        // The child has its copy; the runner's must go, or the gate would
        // never see the pipe close if the runner died.
        drop(read_end);
        Ok((child, StartGate { write_end }))
    }
}

impl Spawner {
    /// Spawns a keeper process (see [`crate::ProcessKeepers`]): in a session
    /// of its own, so that a signal to the runner's terminal or process
    /// group never reaches it, and set to be killed if the runner dies
    /// before the keeper has taken its slot over (the keeper clears that
    /// once the slot is its own). Spawned from the spawner's long-lived
    /// thread, since the parent-death signal follows the forking thread.
    pub async fn spawn_keeper(&self, mut command: Command) -> io::Result<Child> {
        let parent = std::process::id();
        command.kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (setsid, prctl, getppid), and builds
        // its errors from raw OS codes, which allocate nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        self.on_spawner_thread(command).await
    }

    async fn on_spawner_thread(&self, command: Command) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { command, reply })
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }
}

/// Finds `program` as `execvp` would: a name with a slash is a path, a bare
/// name is looked up on `PATH`.
fn resolve_program(program: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the program is empty",
        ));
    }
    if program.components().count() > 1 || program.is_absolute() {
        return if runnable(program) {
            Ok(program.to_path_buf())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no runnable file at that path",
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| runnable(candidate))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not found on PATH"))
}

/// If this process was started as an executor's start gate, waits for its
/// runner's go and becomes the executor (never returning), or returns the
/// exit status to end with. Returns `None` in every other process.
///
/// Call it first thing in `main` of any binary that runs a [`Spawner`].
pub fn run_exec_gate_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != EXEC_GATE_ARG {
        return None;
    }
    let (Some(program), Some(name)) = (args.next(), args.next()) else {
        eprintln!("inflight: {EXEC_GATE_ARG} needs a program and its name");
        return Some(ExitCode::from(GATE_EXEC_FAILED));
    };
    // SAFETY: the spawner put the gate's read end on GATE_FD, and nothing
    // else in this process uses it.
    let mut gate = unsafe { File::from_raw_fd(GATE_FD) };
    let mut go = [0u8; 1];
    if !matches!(gate.read(&mut go), Ok(1)) {
        // The write end closed unwritten: the runner died before it could
        // record this executor, so it must not run.
        eprintln!("inflight: the runner ended before recording the executor; not starting it");
        return Some(ExitCode::from(GATE_ABANDONED));
    }
    drop(gate);
    let error = std::process::Command::new(&program)
        .arg0(name)
        .args(args)
        .exec();
    eprintln!(
        "inflight: could not start the executor {}: {error}",
        Path::new(&program).display()
    );
    Some(ExitCode::from(GATE_EXEC_FAILED))
}
