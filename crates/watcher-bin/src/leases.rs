//! The runner's hold on its slots.
//!
//! Every renew interval, one call renews the lease of every slot this runner
//! holds ([`LedgerStore::renew_leases`]). A slot it holds that the renewal
//! no longer returns was reclaimed (another host judged its lease expired,
//! or an operator released it): its executor is stopped at once, since the
//! task may already be running elsewhere. A runner that cannot renew (the
//! database is down, or this host is cut off from it) stops admitting, and
//! stops its executors before its lease can run out by its own monotonic
//! clock: the last renewal the store answered, from when it was sent, plus
//! the lease, less the grace period an executor gets to stop and a second.
//! Only then may another host reclaim the slots, so no task runs twice.
//! Slots whose finish failed meanwhile are finished when the store answers
//! again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::{Clock, FinishReason, LedgerStore, Owner, RunId, SlotKey};
use runtime::on_store;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a held slot must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The store no longer has it as ours.
    Reclaimed,
    /// Its lease could not be renewed in time.
    Unrenewable,
}

/// A held slot's run, where its loss is announced, and since when its
/// admission is known to have committed (`None` while it is under way).
type Holding = (RunId, watch::Sender<Option<Lost>>, Option<Instant>);

/// What the runner holds, and how its renewals go.
#[derive(Debug)]
pub(crate) struct Leases {
    store: Arc<dyn LedgerStore>,
    clock: Arc<dyn Clock>,
    owner: Owner,
    lease: Duration,
    every: Duration,
    /// Stop executors this long before the lease would run out.
    margin: Duration,
    held: Mutex<HashMap<SlotKey, Holding>>,
    /// When the last renewal the store answered was sent.
    renewed: Mutex<Instant>,
    at_risk: AtomicBool,
    /// Finishes the store refused, to try again.
    unfinished: Mutex<Vec<(SlotKey, RunId, FinishReason)>>,
    /// Counts renewals.
    metrics: Arc<runtime::Metrics>,
}

impl Leases {
    pub(crate) fn new(
        store: Arc<dyn LedgerStore>,
        clock: Arc<dyn Clock>,
        owner: Owner,
        lease: Duration,
        every: Duration,
        grace: Duration,
        metrics: Arc<runtime::Metrics>,
    ) -> Self {
        Self {
            store,
            clock,
            owner,
            lease,
            every,
            margin: grace + Duration::from_secs(1),
            held: Mutex::default(),
            renewed: Mutex::new(Instant::now()),
            at_risk: AtomicBool::new(false),
            unfinished: Mutex::default(),
            metrics,
        }
    }

    /// Counts `run`'s slot under `key` as held (from just before its
    /// admission); the receiver says if it is lost.
    pub(crate) fn hold(&self, key: &SlotKey, run: &RunId) -> watch::Receiver<Option<Lost>> {
        let (tx, rx) = watch::channel(None);
        lock(&self.held).insert(key.clone(), (run.clone(), tx, None));
        rx
    }

    /// The admission of `key` committed: from now on a renewal that does
    /// not return it means it was reclaimed.
    pub(crate) fn admitted(&self, key: &SlotKey) {
        if let Some(holding) = lock(&self.held).get_mut(key) {
            holding.2 = Some(Instant::now());
        }
    }

    /// No longer held (finished, or handed to the retry list).
    pub(crate) fn release(&self, key: &SlotKey) {
        lock(&self.held).remove(key);
    }

    /// Whether renewals are failing so long that nothing may be admitted.
    pub(crate) fn at_risk(&self) -> bool {
        self.at_risk.load(Ordering::SeqCst)
    }

    /// A finish the store refused: tried again at each renewal.
    pub(crate) fn finish_later(&self, key: SlotKey, run: RunId, reason: FinishReason) {
        lock(&self.unfinished).push((key, run, reason));
    }

    /// When the leases run out if no renewal gets through, less the margin.
    fn deadline(&self) -> Instant {
        (*lock(&self.renewed) + self.lease)
            .checked_sub(self.margin)
            .unwrap_or_else(Instant::now)
    }

    /// Renews until `stop` says so.
    pub(crate) async fn keep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut next = Instant::now() + self.every;
        loop {
            // Past the deadline the executors are already told to stop:
            // wait for the next renewal only.
            let wake = if self.at_risk() {
                next
            } else {
                next.min(self.deadline())
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if Instant::now() >= next {
                next = Instant::now() + self.every;
                self.renew().await;
            }
            self.check_deadline();
        }
    }

    /// One renewal of every held slot, bounded by the deadline.
    pub(crate) async fn renew(&self) {
        let sent = Instant::now();
        // Only slots whose admission had committed before the renewal was
        // sent can be missing from its answer for a reason: one admitted
        // meanwhile may not be visible to it yet.
        let held_before: Vec<(SlotKey, RunId)> = lock(&self.held)
            .iter()
            .filter(|(_, (_, _, admitted))| admitted.is_some_and(|at| at < sent))
            .map(|(key, (run, _, _))| (key.clone(), run.clone()))
            .collect();
        let (owner, lease, now) = (self.owner.clone(), self.lease, self.clock.now());
        let renewal = on_store(&self.store, move |s| s.renew_leases(&owner, lease, now));
        // In time to stop the executors if it fails; once they are told to
        // stop, a renewal may take up to the interval.
        let bound = if self.at_risk() {
            sent + self.every
        } else {
            self.deadline().max(sent)
        };
        let answer = tokio::time::timeout_at(bound, renewal).await;
        self.metrics.renewal(matches!(answer, Ok(Ok(_))));
        match answer {
            Ok(Ok(renewed)) => {
                *lock(&self.renewed) = sent;
                if self.at_risk.swap(false, Ordering::SeqCst) {
                    tracing::info!("the ledger answers again: renewing leases and admitting");
                }
                let strays = {
                    let held = lock(&self.held);
                    for (key, run) in held_before.iter().filter(|h| !renewed.contains(h)) {
                        if let Some((still, lost, _)) = held.get(key)
                            && still == run
                        {
                            tracing::warn!(slot = %key, run = %run, "the slot was reclaimed while this runner held it; stopping its executor");
                            lost.send_replace(Some(Lost::Reclaimed));
                        }
                    }
                    // Open in this runner's name, yet not held: an admission
                    // whose commit landed though its answer was lost (the
                    // database went away mid-call). Nothing runs for it, and
                    // while this runner lives no rule would reclaim it.
                    // (A slot whose finish failed is not held either: its
                    // retry below finishes it with its own reason.)
                    let unfinished = lock(&self.unfinished);
                    renewed
                        .into_iter()
                        .filter(|(key, _)| {
                            !held.contains_key(key) && unfinished.iter().all(|(k, _, _)| k != key)
                        })
                        .collect::<Vec<_>>()
                };
                for (key, run) in strays {
                    tracing::warn!(slot = %key, run = %run, "a slot open in this runner's name runs nothing (its admission's answer was lost); finishing it");
                    self.finish_stray(key, run).await;
                }
                self.retry_finishes().await;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not renew the leases"),
            Err(_) => tracing::warn!("renewing the leases did not finish in time"),
        }
    }

    /// Past the deadline without a renewal: admit nothing and stop every
    /// executor, before another host may reclaim their slots.
    fn check_deadline(&self) {
        if Instant::now() < self.deadline() {
            return;
        }
        if !self.at_risk.swap(true, Ordering::SeqCst) {
            tracing::error!(
                lease_secs = self.lease.as_secs(),
                "the leases could not be renewed in time: stopping every executor and admitting nothing until the ledger answers"
            );
        }
        for (_, lost, _) in lock(&self.held).values() {
            if lost.borrow().is_none() {
                lost.send_replace(Some(Lost::Unrenewable));
            }
        }
    }

    /// Finishes a stray, conditional on its run: never anyone else's slot.
    async fn finish_stray(&self, key: SlotKey, run: RunId) {
        let (k, now) = (key.clone(), self.clock.now());
        let finished = on_store(&self.store, move |s| {
            s.finish(&k, Some(&run), FinishReason::NotStarted, now)
        })
        .await;
        if let Err(e) = finished {
            tracing::warn!(slot = %key, error = %e, "could not finish a stray slot; trying again at the next renewal");
        }
    }

    async fn retry_finishes(&self) {
        let pending = std::mem::take(&mut *lock(&self.unfinished));
        for (key, run, reason) in pending {
            let (k, r, why, now) = (key.clone(), run.clone(), reason.clone(), self.clock.now());
            match on_store(&self.store, move |s| s.finish(&k, Some(&r), why, now)).await {
                Ok(outcome) => {
                    tracing::info!(slot = %key, run = %run, ?outcome, "finished a slot whose finish had failed")
                }
                Err(_) => self.finish_later(key, run, reason),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
