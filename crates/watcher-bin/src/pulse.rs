//! The claim loop's signs of life, for systemd's watchdog: a runner pings
//! (`WATCHDOG=1`) only while its loop is seen alive, so a loop stuck in a
//! call that never returns (a store that stopped answering) goes silent
//! and systemd restarts the runner (its keepers go on).
//!
//! Alive means: the loop began a cycle or left a wait within the
//! watchdog's interval, or it is waiting now (for the poll interval, a
//! webhook's hint, a run's end, a backoff): waiting is what a healthy idle
//! runner does.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Pulse {
    origin: Instant,
    /// Milliseconds from `origin` to the last sign of life.
    last: AtomicU64,
    /// Waits in progress.
    waiting: AtomicU32,
}

impl Pulse {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
        }
    }

    /// A sign of life.
    pub(crate) fn beat(&self) {
        let at = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(at, Ordering::Relaxed);
    }

    /// Runs `wait`, a healthy wait: alive while it lasts, and a sign of
    /// life when it ends (or is dropped).
    pub(crate) async fn idle<T>(&self, wait: impl Future<Output = T>) -> T {
        struct Waiting<'a>(&'a Pulse);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.waiting.fetch_sub(1, Ordering::Relaxed);
                self.0.beat();
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(self);
        wait.await
    }

    /// Whether the loop is waiting now, or showed life within `within`.
    pub(crate) fn alive_within(&self, within: Duration) -> bool {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last) < within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn alive_while_waiting_or_lately_busy_not_when_stuck() {
        let pulse = Pulse::new();
        pulse.beat();
        assert!(pulse.alive_within(Duration::from_secs(2)));
        // Stuck in a call for 5 s: not alive after 2.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!pulse.alive_within(Duration::from_secs(2)));
        // Waiting for 10 s: alive all along, and just after.
        pulse
            .idle(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                assert!(pulse.alive_within(Duration::from_secs(2)));
            })
            .await;
        assert!(pulse.alive_within(Duration::from_secs(2)));
    }
}
