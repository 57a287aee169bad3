//! Starting executors, behind a trait: the runner only asks for an executor
//! held at its start gate, records it, lets it start, waits for it and
//! signals its group. [`Spawner`] is the implementation that forks real
//! processes; tests drive the runner in-process with executors that live in
//! tokio's paused time instead.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::Duration;

use ledger_core::{ExecutorIdentity, ProcessIdentity};
use runtime::proc_stat;
use tokio::process::Child;

use crate::{OutputTail, Spawner, StartGate};

/// A launcher's or an executor's call in flight.
pub type LaunchFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What to run for one dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program, resolved against the configuration's folder.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The working directory.
    pub dir: PathBuf,
    /// Variables set in its environment (`INFLIGHT_TASK_ID` and the rest).
    pub env: Vec<(&'static str, String)>,
    /// Variables removed from the environment it would inherit (Plane's
    /// key).
    pub env_remove: Vec<String>,
    /// The task, for the log lines of its output.
    pub task: String,
}

/// Starts executors for the runner.
pub trait Launcher: Send + Sync + Debug {
    /// Starts `launch`'s program held at its start gate: it must not run
    /// until [`Executor::start`].
    fn launch<'a>(&'a self, launch: &'a Launch) -> LaunchFuture<'a, io::Result<Box<dyn Executor>>>;
}

/// One executor, from its start gate to its end.
pub trait Executor: Send + Debug {
    /// Its pid, start time and process group, as its slot records them
    /// before it may start; an error says why they cannot be known.
    fn identity(&self) -> Result<ExecutorIdentity, String>;
    /// Opens the start gate.
    fn start(&mut self) -> io::Result<()>;
    /// Closes the start gate unopened: the executor ends without running.
    fn abandon(&mut self);
    /// Follows its output: logged line by line, the end kept for a comment.
    fn output(&mut self) -> OutputTail;
    /// Waits for it to exit.
    fn wait(&mut self) -> LaunchFuture<'_, io::Result<ExitStatus>>;
    /// Sends `signal` to its process group.
    fn signal(&self, signal: i32) -> io::Result<()>;
    /// After it exited: terminates what is left of its group (SIGTERM, the
    /// grace period, SIGKILL).
    fn clean_up(&self, identity: &ExecutorIdentity, grace: Duration) -> LaunchFuture<'static, ()>;
}

impl Launcher for Spawner {
    fn launch<'a>(&'a self, launch: &'a Launch) -> LaunchFuture<'a, io::Result<Box<dyn Executor>>> {
        Box::pin(async move {
            let mut command = self.command(&launch.program, &launch.args)?;
            command
                .current_dir(&launch.dir)
                .envs(launch.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            for name in &launch.env_remove {
                command.env_remove(name);
            }
            let (child, gate) = self.spawn(command).await?;
            Ok(Box::new(GatedProcess {
                child,
                gate: Some(gate),
                task: launch.task.clone(),
            }) as Box<dyn Executor>)
        })
    }
}

/// A real executor process behind its start gate.
#[derive(Debug)]
struct GatedProcess {
    child: Child,
    gate: Option<StartGate>,
    task: String,
}

impl Executor for GatedProcess {
    fn identity(&self) -> Result<ExecutorIdentity, String> {
        let pid = self
            .child
            .id()
            .ok_or("the executor exited before it could be recorded")?;
        // A failed `/proc` read is never replaced with a guess: a wrong
        // start time would make a live executor look dead.
        let start_time = match proc_stat(pid) {
            Ok(Some(stat)) => stat.start_time,
            Ok(None) => return Err(format!("the executor (pid {pid}) is gone from /proc")),
            Err(e) => return Err(format!("could not read /proc/{pid}/stat: {e}")),
        };
        Ok(ExecutorIdentity {
            process: ProcessIdentity { pid, start_time },
            // Spawned as the leader of its own group.
            process_group: pid,
        })
    }

    fn start(&mut self) -> io::Result<()> {
        match self.gate.take() {
            Some(gate) => gate.open(),
            None => Err(io::Error::other("the start gate was already used")),
        }
    }

    fn abandon(&mut self) {
        self.gate = None;
    }

    fn output(&mut self) -> OutputTail {
        OutputTail::follow(&mut self.child, &self.task)
    }

    fn wait(&mut self) -> LaunchFuture<'_, io::Result<ExitStatus>> {
        Box::pin(self.child.wait())
    }

    fn signal(&self, signal: i32) -> io::Result<()> {
        let group = self
            .child
            .id()
            .ok_or_else(|| io::Error::other("the executor was already reaped"))?;
        runtime::signal_group(group, signal)
    }

    fn clean_up(&self, identity: &ExecutorIdentity, grace: Duration) -> LaunchFuture<'static, ()> {
        let identity = identity.clone();
        // It sleeps through the grace period: a blocking thread's work.
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || runtime::terminate_group(&identity, grace))
                .await;
        })
    }
}
