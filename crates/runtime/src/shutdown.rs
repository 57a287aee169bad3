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
