//! The adapters that let the orphan rules reach the real ledger and lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::{
    FinishOutcome, FinishReason, Ledger, ReconcileLock, RunId, Slot, SlotKey, Timestamp,
};
use reconcile::{EdgeError, InFlightLedger, LockToken, StartupLock};

/// A [`Ledger`] as the rules see it.
#[derive(Debug, Clone)]
pub struct LedgerAdapter(pub Arc<Ledger>);

impl InFlightLedger for LedgerAdapter {
    fn open_slots(&self) -> Result<Vec<Slot>, EdgeError> {
        self.0.open_slots().map_err(EdgeError::new)
    }

    fn finish_if_run(
        &self,
        key: &SlotKey,
        run: &RunId,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome, EdgeError> {
        self.0
            .finish(key, Some(run), reason, now)
            .map_err(EdgeError::new)
    }
}

/// The reconcile lock file beside a ledger.
#[derive(Debug, Clone)]
pub struct FileStartupLock {
    ledger_path: PathBuf,
}

impl FileStartupLock {
    /// The lock of the ledger at `ledger_path`.
    pub fn new(ledger_path: impl Into<PathBuf>) -> Self {
        Self {
            ledger_path: ledger_path.into(),
        }
    }
}

impl StartupLock for FileStartupLock {
    fn try_lock(&self, timeout: Duration) -> Result<Option<LockToken>, EdgeError> {
        ReconcileLock::acquire(&self.ledger_path, timeout)
            .map(|lock| lock.map(LockToken::new))
            .map_err(EdgeError::new)
    }
}
