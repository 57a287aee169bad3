//! The adapters that let the orphan rules reach the ledger store and its
//! start-up lock.

use std::sync::Arc;
use std::time::Duration;

use ledger_core::{FinishOutcome, FinishReason, LedgerStore, RunId, Slot, SlotKey, Timestamp};
use reconcile::{EdgeError, InFlightLedger, LockToken, StartupLock};

/// A ledger store as the rules see it.
#[derive(Debug, Clone)]
pub struct LedgerAdapter(pub Arc<dyn LedgerStore>);

impl InFlightLedger for LedgerAdapter {
    fn now(&self, local: Timestamp) -> Result<Timestamp, EdgeError> {
        self.0.now(local).map_err(EdgeError::new)
    }

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

/// A store's start-up lock as the rules see it (for the redb store, a file
/// lock beside the ledger file).
#[derive(Debug, Clone)]
pub struct StoreStartupLock(pub Arc<dyn LedgerStore>);

impl StartupLock for StoreStartupLock {
    fn try_lock(&self, timeout: Duration) -> Result<Option<LockToken>, EdgeError> {
        self.0
            .startup_lock(timeout)
            .map(|lock| lock.map(LockToken::new))
            .map_err(EdgeError::new)
    }
}
