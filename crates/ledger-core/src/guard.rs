//! A guard that finishes its slot when dropped, so the ordinary path of a
//! runner can never leak a slot, not even while a panic unwinds.

use std::sync::Arc;

use crate::{Clock, FinishOutcome, FinishReason, LedgerStore, Result, RunId, Slot, SlotKey};

/// Holds one open slot and finishes it exactly once: explicitly through
/// [`SlotGuard::finish`], or on drop as `interrupted` (`failed` when the
/// thread is panicking).
///
/// The finish is conditional on the guard's run id, so a guard that outlives
/// its slot (reclaimed by a watchdog and re-admitted by another runner) can
/// never close the newer run.
///
/// The guard owns what it needs (`'static`), so an async caller can move it
/// to a blocking thread to finish it there. A guard cannot help when the
/// process itself dies; that is what the orphan rules are for.
#[derive(Debug)]
pub struct SlotGuard {
    store: Arc<dyn LedgerStore>,
    clock: Arc<dyn Clock>,
    key: SlotKey,
    run_id: RunId,
    finished: bool,
}

impl SlotGuard {
    /// Guards `slot`, which must have come from an admission on `store`.
    pub fn new(store: Arc<dyn LedgerStore>, slot: &Slot, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            key: slot.key.clone(),
            run_id: slot.run_id.clone(),
            finished: false,
        }
    }

    /// The guarded slot's key.
    pub fn key(&self) -> &SlotKey {
        &self.key
    }

    /// The guarded run.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Stops guarding the slot without finishing it: its run was handed to
    /// another holder (a keeper) that finishes it, or whose outcome a runner
    /// reports.
    pub fn hand_over(mut self) {
        self.finished = true;
    }

    /// Finishes the slot with `reason`.
    pub fn finish(mut self, reason: FinishReason) -> Result<FinishOutcome> {
        self.finished = true;
        self.store
            .finish(&self.key, Some(&self.run_id), reason, self.clock.now())
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let reason = if std::thread::panicking() {
            FinishReason::Failed
        } else {
            FinishReason::Interrupted
        };
        match self.store.finish(
            &self.key,
            Some(&self.run_id),
            reason.clone(),
            self.clock.now(),
        ) {
            Ok(outcome) => {
                tracing::debug!(slot = %self.key, run = %self.run_id, %reason, ?outcome, "slot guard finished its slot on drop")
            }
            // Drop cannot return an error; the slot stays open and the orphan
            // rules will reclaim it.
            Err(error) => {
                tracing::error!(slot = %self.key, run = %self.run_id, %error, "slot guard could not finish its slot")
            }
        }
    }
}
