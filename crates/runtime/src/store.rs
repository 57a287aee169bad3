//! The one place that knows which store backs the ledger: the factory the
//! binaries open it through, and the bridge that runs a store's blocking
//! calls off the async runtime.

use std::sync::Arc;

use ledger_core::{LedgerError, LedgerStore};

use crate::Config;

/// Opens the ledger store the configuration names. Today that is the redb
/// file of `[ledger] path`, opened in multi-process mode (the watcher, the
/// watchdog and every read-only command share the file); the binaries see
/// only the [`LedgerStore`] contract.
pub fn open_store(config: &Config) -> Result<Arc<dyn LedgerStore>, LedgerError> {
    let options = ledger_core::LedgerOptions {
        write_deadline: config.ledger.write_deadline,
        retention: config.ledger.retention,
        ..ledger_core::LedgerOptions::default()
    };
    let ledger = ledger_core::Ledger::open_with(&config.ledger.path, options)?;
    Ok(Arc::new(ledger))
}

/// Runs a store call on tokio's blocking pool and waits for it without
/// blocking the runtime: a durable commit, or a wait of up to
/// `write_deadline` for another process's write lock, must not stall the
/// runtime's other work (timers, a shutdown signal, an executor's output).
///
/// A panic in the call is resumed in the caller, as if the call had been
/// made in place.
pub async fn on_store<T: Send + 'static>(
    store: &Arc<dyn LedgerStore>,
    call: impl FnOnce(&dyn LedgerStore) -> T + Send + 'static,
) -> T {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || call(&*store)).await {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels a blocking task; the
            // caller is going away with it.
            Err(_) => std::future::pending().await,
        },
    }
}
