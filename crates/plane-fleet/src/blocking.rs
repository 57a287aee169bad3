//! Store calls from async code.

use std::sync::Arc;

/// Runs a store call on tokio's blocking pool and waits for it without
/// blocking the runtime: a durable commit, or a wait of up to
/// `write_deadline` for another process's write lock, must not stall the
/// runtime's other work (timers, a shutdown signal, an executor's output).
///
/// A panic in the call is resumed in the caller, as if the call had been
/// made in place.
pub async fn on_store<S, T>(store: &Arc<S>, call: impl FnOnce(&S) -> T + Send + 'static) -> T
where
    S: ?Sized + Send + Sync + 'static,
    T: Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || ledger_core::blocking::may_block(|| call(&*store)))
        .await
    {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels a blocking task; the
            // caller is going away with it.
            Err(_) => std::future::pending().await,
        },
    }
}
