//! Starting keepers and following them, behind a trait: the runner only
//! starts a keeper for an admitted run, waits for it to end and asks it to
//! stop. [`ProcessKeepers`] starts real keeper processes (this binary, with
//! [`KEEPER_ARG`]) and follows adopted ones by pid; [`InProcessKeepers`]
//! runs the keeper's logic as a task of the caller's runtime, for tests and
//! for embedders that want no processes.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::{Backend, Clock, LedgerStore, Owner, ProcessIdentity, RunId, SlotKey, TaskId};
use runtime::{Config, HostIdentity, LogFormat, proc_stat};
use tokio::sync::watch;

use crate::keeper::{KEEPER_ARG, KeeperEnd, KeeperJob, KeeperParts, keep};
use crate::{LaunchFuture, Launcher, Spawner};

/// Starts keepers and adopts running ones.
pub trait Keepers: Send + Sync + Debug {
    /// Starts a keeper for `job`, whose slot this runner holds. The keeper
    /// takes the slot over itself (see [`crate::keep`]).
    fn start<'a>(&'a self, job: &'a KeeperJob) -> LaunchFuture<'a, io::Result<Box<dyn Keeper>>>;
    /// Follows a keeper another runner started: `holder` is its slot's
    /// holder.
    fn adopt(&self, holder: &Owner) -> Box<dyn Keeper>;
}

/// One keeper, as its runner follows it.
pub trait Keeper: Send + Debug {
    /// The keeper's word that it has taken its slot over (its holder is
    /// recorded): `true` once it says so, `false` if it ended without
    /// saying; never completes for a keeper that cannot say (an adopted
    /// one). The runner waits for it instead of reading the slot over and
    /// over; it can be taken once (later calls never complete). By
    /// default a keeper cannot say.
    fn word(&mut self) -> LaunchFuture<'static, bool> {
        Box::pin(std::future::pending())
    }
    /// Completes when the keeper has exited.
    fn wait(&mut self) -> LaunchFuture<'_, ()>;
    /// Asks it to stop its executor and record the run as interrupted.
    fn interrupt(&self) -> io::Result<()>;
}

/// Keeper processes: this binary started with [`KEEPER_ARG`], each in a
/// session of its own (a terminal's Ctrl-C or a unit's stop reaches the
/// runner, not them).
#[derive(Debug, Clone)]
pub struct ProcessKeepers {
    spawner: Spawner,
    program: PathBuf,
    config: PathBuf,
    log_format: LogFormat,
}

impl ProcessKeepers {
    /// Keepers started as `program` (a binary whose `main` calls
    /// [`run_keeper_if_asked`] first) with the configuration file `config`,
    /// logging in `log_format`. Call it inside a tokio runtime.
    pub fn new(program: PathBuf, config: PathBuf, log_format: LogFormat) -> io::Result<Self> {
        Ok(Self {
            spawner: Spawner::start_with_gate(program.clone())?,
            program,
            config,
            log_format,
        })
    }
}

impl Keepers for ProcessKeepers {
    fn start<'a>(&'a self, job: &'a KeeperJob) -> LaunchFuture<'a, io::Result<Box<dyn Keeper>>> {
        Box::pin(async move {
            let mut command = tokio::process::Command::new(&self.program);
            command
                .arg(KEEPER_ARG)
                .arg("--config")
                .arg(&self.config)
                .args(["--log-format", self.log_format.as_str()])
                .args(job.to_args())
                .stdin(std::process::Stdio::null())
                // Its word that it took the slot (`TAKEN`), then nothing.
                .stdout(std::process::Stdio::piped());
            let mut child = self.spawner.spawn_keeper(command).await?;
            let pid = child
                .id()
                .ok_or_else(|| io::Error::other("the keeper exited at once"))?;
            let start_time = proc_stat(pid)?.map(|s| s.start_time).unwrap_or_default();
            let word = child.stdout.take();
            Ok(Box::new(KeeperProcess {
                child: Some(child),
                word,
                process: ProcessIdentity { pid, start_time },
            }) as Box<dyn Keeper>)
        })
    }

    fn adopt(&self, holder: &Owner) -> Box<dyn Keeper> {
        Box::new(KeeperProcess {
            child: None,
            word: None,
            process: holder.runner.clone(),
        })
    }
}

/// A keeper process: a child of this runner, or one adopted by its pid and
/// start time.
#[derive(Debug)]
struct KeeperProcess {
    child: Option<tokio::process::Child>,
    /// The keeper's stdout, until its word is read.
    word: Option<tokio::process::ChildStdout>,
    process: ProcessIdentity,
}

/// What a keeper process writes on its stdout once it has taken its slot.
pub(crate) const TAKEN: &str = "taken";

/// How often an adopted keeper (not this runner's child, so not waitable)
/// is looked for in `/proc`.
const ADOPTED_POLL: Duration = Duration::from_millis(100);

impl KeeperProcess {
    /// Whether the process is still the keeper and running.
    fn running(&self) -> bool {
        runtime::is_running(&self.process).unwrap_or(false)
    }
}

impl Keeper for KeeperProcess {
    fn word(&mut self) -> LaunchFuture<'static, bool> {
        let Some(stdout) = self.word.take() else {
            return Box::pin(std::future::pending());
        };
        Box::pin(async move {
            use tokio::io::AsyncBufReadExt;
            let mut line = String::new();
            let read = tokio::io::BufReader::new(stdout).read_line(&mut line).await;
            read.is_ok() && line.trim_end() == TAKEN
        })
    }

    fn wait(&mut self) -> LaunchFuture<'_, ()> {
        Box::pin(async move {
            if let Some(child) = &mut self.child {
                let _ = child.wait().await;
                return;
            }
            while self.running() {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
        })
    }

    /// SIGTERM, if it still runs as that process (its pid not reused): the
    /// keeper stops its executor and records the run as interrupted.
    fn interrupt(&self) -> io::Result<()> {
        runtime::signal_process(&self.process, libc::SIGTERM).map(|_| ())
    }
}

/// Keepers as tasks of the caller's tokio runtime: the keeper's logic
/// without its process, for tests under a paused clock and for embedders.
/// Each keeper records a holder identity of its own (this process's pid
/// with a start time no process has), so the runner's renewals never take
/// its slot for the runner's.
#[derive(Debug, Clone)]
pub struct InProcessKeepers {
    inner: Arc<InProcessInner>,
}

#[derive(Debug)]
struct InProcessInner {
    config: Config,
    store: Arc<dyn LedgerStore>,
    launcher: Arc<dyn Launcher>,
    clock: Arc<dyn Clock>,
    host: HostIdentity,
    next: AtomicU64,
    /// Each running keeper by its start time: its interrupt and its end.
    running: Mutex<HashMap<u64, Running>>,
}

/// A running in-process keeper: its interrupt, and whether it has ended.
type Running = (watch::Sender<bool>, watch::Receiver<bool>);

impl InProcessKeepers {
    /// Keepers that start executors with `launcher` and keep slots in
    /// `store`.
    pub fn new(
        config: Config,
        store: Arc<dyn LedgerStore>,
        launcher: Arc<dyn Launcher>,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Self> {
        Ok(Self {
            inner: Arc::new(InProcessInner {
                config,
                store,
                launcher,
                clock,
                host: HostIdentity::current()?,
                next: AtomicU64::new(1),
                running: Mutex::default(),
            }),
        })
    }
}

impl Keepers for InProcessKeepers {
    fn start<'a>(&'a self, job: &'a KeeperJob) -> LaunchFuture<'a, io::Result<Box<dyn Keeper>>> {
        Box::pin(async move {
            let inner = &self.inner;
            let start_time = u64::MAX - inner.next.fetch_add(1, Ordering::SeqCst);
            let holder = Owner {
                host: inner.host.host.clone(),
                boot_id: inner.host.boot_id.clone(),
                runner: ProcessIdentity {
                    pid: std::process::id(),
                    start_time,
                },
                executor: None,
                role: Some(job.role.clone()),
                project: Some(inner.config.project()),
                keeper: None,
                outcome: None,
                title: None,
            };
            let parts = KeeperParts {
                config: inner.config.clone(),
                store: inner.store.clone(),
                launcher: inner.launcher.clone(),
                clock: inner.clock.clone(),
                holder,
                metrics: runtime::Metrics::new(),
            };
            let (interrupt, interrupted) = watch::channel(false);
            let (ended, end) = watch::channel(false);
            let (said, word) = watch::channel(false);
            inner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(start_time, (interrupt.clone(), end.clone()));
            let job = job.clone();
            let registry = self.inner.clone();
            tokio::spawn(async move {
                let detach = move || {
                    said.send_replace(true);
                };
                let kept = keep(parts, job, detach, || {}, interrupted).await;
                tracing::debug!(?kept, "in-process keeper ended");
                registry
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&start_time);
                let _ = ended.send(true);
            });
            Ok(Box::new(InProcessKeeper {
                interrupt,
                end,
                word: Some(word),
            }) as Box<dyn Keeper>)
        })
    }

    fn adopt(&self, holder: &Owner) -> Box<dyn Keeper> {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&holder.runner.start_time)
            .cloned();
        let (interrupt, end) =
            running.unwrap_or_else(|| (watch::channel(false).0, watch::channel(true).1));
        Box::new(InProcessKeeper {
            interrupt,
            end,
            word: None,
        })
    }
}

#[derive(Debug)]
struct InProcessKeeper {
    interrupt: watch::Sender<bool>,
    end: watch::Receiver<bool>,
    word: Option<watch::Receiver<bool>>,
}

impl Keeper for InProcessKeeper {
    fn word(&mut self) -> LaunchFuture<'static, bool> {
        let Some(mut word) = self.word.take() else {
            return Box::pin(std::future::pending());
        };
        // `false` when the keeper's task ended (its sender dropped) first.
        Box::pin(async move { word.wait_for(|said| *said).await.is_ok() })
    }

    fn wait(&mut self) -> LaunchFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.end.wait_for(|ended| *ended).await;
        })
    }

    fn interrupt(&self) -> io::Result<()> {
        self.interrupt.send_replace(true);
        Ok(())
    }
}

/// If this process was started as a keeper, keeps its run and returns the
/// exit status to end with; `None` in every other process.
///
/// Call it first thing in `main` of the binary that [`ProcessKeepers`]
/// starts (after [`crate::run_exec_gate_if_asked`]).
pub fn run_keeper_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next()? != KEEPER_ARG {
        return None;
    }
    let args: Vec<String> = args.collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let format = value("--log-format")
        .and_then(|f| f.parse::<LogFormat>().ok())
        .unwrap_or(LogFormat::Text);
    runtime::init_logging(format);
    let job = (|| -> Result<(PathBuf, KeeperJob), String> {
        let needed = |name: &str| value(name).ok_or_else(|| format!("{KEEPER_ARG} needs {name}"));
        let backend = Backend::new(needed("--backend")?).map_err(|e| e.to_string())?;
        let task = TaskId::new(needed("--task")?).map_err(|e| e.to_string())?;
        Ok((
            PathBuf::from(needed("--config")?),
            KeeperJob {
                role: needed("--role")?,
                key: SlotKey::new(backend, task),
                run: RunId::new(needed("--run")?).map_err(|e| e.to_string())?,
                task_name: value("--task-name").unwrap_or_default(),
            },
        ))
    })();
    let (config, job) = match job {
        Ok(job) => job,
        Err(why) => {
            tracing::error!("keeper: {why}");
            return Some(ExitCode::from(2));
        }
    };
    Some(match keep_in_this_process(&config, job) {
        Ok(KeeperEnd::Recorded(_)) => ExitCode::SUCCESS,
        Ok(KeeperEnd::NotHeld(why)) => {
            tracing::warn!("keeper: {why}");
            ExitCode::SUCCESS
        }
        Ok(KeeperEnd::Failed(why)) => {
            tracing::error!("keeper: {why}");
            ExitCode::from(1)
        }
        Err(why) => {
            tracing::error!("keeper: {why}");
            ExitCode::from(1)
        }
    })
}

fn keep_in_this_process(config: &std::path::Path, job: KeeperJob) -> Result<KeeperEnd, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let host = HostIdentity::current().map_err(|e| format!("this host's identity: {e}"))?;
    let mut holder = runtime::this_owner(&host).map_err(|e| format!("this process: {e}"))?;
    holder.role = Some(job.role.clone());
    holder.project = Some(config.project());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    // Opened before the runtime runs: a store's open blocks.
    let store = runtime::open_store(&config).map_err(|e| e.to_string())?;
    let end = runtime.block_on(async move {
        let shutdown = runtime::Shutdown::on_signals().map_err(|e| e.to_string())?;
        let launcher = Spawner::start().map_err(|e| format!("the executor spawner: {e}"))?;
        let parts = KeeperParts {
            config,
            store,
            launcher: Arc::new(launcher) as Arc<dyn Launcher>,
            clock: Arc::new(ledger_core::SystemClock),
            holder,
            metrics: runtime::Metrics::new(),
        };
        let (interrupt, interrupted) = watch::channel(false);
        let stopped = shutdown.stopped();
        tokio::spawn(async move {
            stopped.await;
            let _ = interrupt.send(true);
        });
        Ok::<_, String>(
            keep(
                parts,
                job,
                on_taking_the_slot,
                release_start_up_pages,
                interrupted,
            )
            .await,
        )
    });
    runtime.shutdown_timeout(Duration::from_millis(500));
    end
}

/// The executor runs: from here on the keeper lives on a timer and a wait
/// for as long as it runs, so the code of its start-up need not stay
/// mapped (see [`crate::memory`]).
fn release_start_up_pages() {
    match crate::memory::release_clean_file_pages() {
        Ok(kb) => tracing::debug!(kb, "released the start-up's clean pages"),
        Err(e) => tracing::debug!(error = %e, "could not release the start-up's clean pages"),
    }
}

/// The slot is the keeper's now: from here on it must outlive its runner;
/// and the runner waiting for it is told so.
fn on_taking_the_slot() {
    detach_from_the_runner();
    tell_the_runner();
}

/// Writes [`TAKEN`] on stdout (a pipe the runner reads), then points
/// stdout at `/dev/null`: the pipe is for this one word, and a runner
/// restarted since has closed its end (the write then fails with EPIPE,
/// which Rust's ignored SIGPIPE turns into an error, ignored here: the
/// runner also reads the slot).
fn tell_the_runner() {
    use std::io::Write;
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{TAKEN}").and_then(|()| stdout.flush());
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 1 with a valid open descriptor; stdout's
        // lock is held, so no write of this process's is under way.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

fn detach_from_the_runner() {
    // SAFETY: prctl with PR_SET_PDEATHSIG and 0 has no memory-safety
    // preconditions.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) } != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "could not detach from the runner: a restart of the runner ends this run"
        );
    }
}
