//! A guard that finishes its slot when dropped, so the ordinary path of a
//! runner can never leak a slot, not even while a panic unwinds.

use crate::{Clock, FinishOutcome, FinishReason, Ledger, Result, RunId, Slot, SlotKey};

/// Holds one open slot and finishes it exactly once: explicitly through
/// [`SlotGuard::finish`], or on drop as `interrupted` (`failed` when the
/// thread is panicking).
///
/// The finish is conditional on the guard's run id, so a guard that outlives
/// its slot (reclaimed by a watchdog and re-admitted by another runner) can
/// never close the newer run.
///
/// A guard cannot help when the process itself dies; that is what the orphan
/// rules are for.
#[derive(Debug)]
pub struct SlotGuard<'a> {
    ledger: &'a Ledger,
    clock: &'a dyn Clock,
    key: SlotKey,
    run_id: RunId,
    finished: bool,
}

impl<'a> SlotGuard<'a> {
    /// Guards `slot`, which must have come from an admission on `ledger`.
    pub fn new(ledger: &'a Ledger, slot: &Slot, clock: &'a dyn Clock) -> Self {
        Self {
            ledger,
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

    /// Finishes the slot with `reason`.
    pub fn finish(mut self, reason: FinishReason) -> Result<FinishOutcome> {
        self.finished = true;
        self.ledger
            .finish(&self.key, Some(&self.run_id), reason, self.clock.now())
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let reason = if std::thread::panicking() {
            FinishReason::Failed
        } else {
            FinishReason::Interrupted
        };
        match self.ledger.finish(
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
