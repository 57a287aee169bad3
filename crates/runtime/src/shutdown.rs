//! Stopping a binary: SIGTERM or SIGINT, or the binary itself, tells every
//! task waiting on [`Shutdown::stopped`] at once (the runner or the scans,
//! the metrics and webhook listeners, the textfile writer).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// One stop for every task of a process.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// Installs the SIGTERM and SIGINT handlers now, before anything runs
    /// (so an early signal is not met by the default action: dying with a
    /// slot open), and stops at the first of them. Call it inside a tokio
    /// runtime.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = Self {
            stop: Arc::new(watch::channel(false).0),
        };
        let signalled = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            signalled.stop();
        });
        Ok(shutdown)
    }

    /// Stops once `cause` completes (a test's timer, an embedder's own
    /// signal), telling every task waiting on [`Shutdown::stopped`]. Call
    /// it inside a tokio runtime.
    pub fn when(cause: impl Future<Output = ()> + Send + 'static) -> Self {
        let shutdown = Self {
            stop: Arc::new(watch::channel(false).0),
        };
        let caused = shutdown.clone();
        tokio::spawn(async move {
            cause.await;
            caused.stop();
        });
        shutdown
    }

    /// Stops everything waiting (the process is done).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Completes once stopped.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            // The sender lives as long as any clone of this `Shutdown`.
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    }
}

/// A binary's `main` after its arguments are parsed: runs `work` on a
/// current-thread runtime, then turns its outcome into an exit status:
/// 0, or the message on stderr (`NAME: error`, or a JSON line in `format`
/// JSON, see [`crate::report_failure`]) and `status(&error)`.
///
/// A store call cut short by shutdown (a sweep waiting for another
/// process's write lock, say) may still sit on a blocking thread: it gets
/// half a second, then the process exits without it. A commit under way is
/// atomic like any other a kill interrupts.
pub fn run_main<E: std::fmt::Display>(
    name: &str,
    format: crate::LogFormat,
    work: impl Future<Output = Result<(), E>>,
    status: impl FnOnce(&E) -> u8,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            crate::report_failure(name, format, &format_args!("cannot start: {e}"));
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(work);
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::report_failure(name, format, &e);
            ExitCode::from(status(&e))
        }
    }
}
