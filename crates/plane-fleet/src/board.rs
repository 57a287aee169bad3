//! One look at the board for every runner sharing a store: the project's
//! work items listed by one process at most once per poll interval and
//! kept in the ledger's store ([`FleetStore::board_look`](ledger_core::FleetStore::board_look)), and the
//! webhook hints that tell runners of a change before the next listing.
//!
//! A snapshot is only ever a list of candidates. A runner re-reads a
//! candidate from Plane before it claims it, and skips the tasks admitted
//! since the listing began (the starts the audit log numbers above the
//! snapshot's `events_seen`), so a stale snapshot costs no second run and
//! few requests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ledger_core::{BoardLook, BoardSnapshot, Clock, EventKind, Store, TaskId, Timestamp};
use plane_client::{LabelRef, PlaneError, StateGroup, StateLite, StateRef, WorkItem};
use serde::{Deserialize, Serialize};

use inflight_config::Config;

use crate::{Plane, on_store};

/// The most a listing's claim holds off other listers without a renewal.
/// A lister renews its claim while it lists (however long Plane takes), so
/// this bounds only how long a lister that died unannounced (SIGKILL, a
/// host gone) keeps the others waiting.
const LISTING_FOR_MOST: Duration = Duration::from_secs(60);

/// The least: a few renewals' worth of store round trips.
const LISTING_FOR_LEAST: Duration = Duration::from_millis(500);

/// How long a listing's claim lasts between renewals, for snapshots kept
/// `max_age` (the poll interval): half of it, so that a dead lister's
/// claim lapses before the next poll and another process lists instead.
fn listing_for(max_age: Duration) -> Duration {
    (max_age / 2).clamp(LISTING_FOR_LEAST, LISTING_FOR_MOST)
}

/// How often a process with no snapshot at all looks again while another
/// lists the board.
const LISTING_WAIT: Duration = Duration::from_millis(250);

/// The most audit events a look reads to learn what was admitted since its
/// snapshot's listing (a poll interval's worth, many times over).
const EVENTS_SINCE_LIMIT: usize = 100_000;

/// The store's key for `config`'s project: the server, the workspace and
/// the project, so two projects (or two Plane servers) never share one.
pub fn board_key(config: &Config) -> String {
    format!(
        "plane:{}|{}|{}",
        config.plane.base_url.trim_end_matches('/'),
        config.plane.workspace,
        config.plane.project_id
    )
}

/// A work item as snapshots and hints keep it: what runners read, no more.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    id: String,
    name: String,
    state: String,
    /// The state's name and group, when the listing had them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state_name: Option<(String, String)>,
    labels: Vec<String>,
    /// Milliseconds since the epoch.
    created_at: i64,
    /// When it last changed, in milliseconds since the epoch, when known
    /// (a webhook's hint carries it; a listing does not ask for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<i64>,
}

impl Kept {
    fn of(item: &WorkItem) -> Self {
        let millis = |at: SystemTime| Timestamp::from_system_time(at).as_unix_millis();
        let created = millis(item.created_at);
        Kept {
            id: item.id.clone(),
            name: item.name.clone(),
            state: item.state.id().to_owned(),
            state_name: match &item.state {
                StateRef::Expanded(s) => Some((s.name.clone(), s.group.as_str().to_owned())),
                StateRef::Id(_) => None,
            },
            labels: item.labels.iter().map(|l| l.id().to_owned()).collect(),
            created_at: created,
            updated_at: item.updated_at.map(millis),
        }
    }

    fn into_item(self) -> WorkItem {
        let state = match self.state_name {
            Some((name, group)) => StateRef::Expanded(StateLite {
                id: self.state,
                name,
                group: serde_json::from_value(serde_json::Value::String(group))
                    .unwrap_or(StateGroup::Other(String::new())),
            }),
            None => StateRef::Id(self.state),
        };
        let at = |millis: i64| Timestamp::from_unix_millis(millis).to_system_time();
        WorkItem {
            id: self.id,
            name: self.name,
            sequence_id: None,
            state,
            labels: self.labels.into_iter().map(LabelRef::Id).collect(),
            created_at: at(self.created_at),
            updated_at: self.updated_at.map(at),
            priority: None,
            project: None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `items` as a snapshot's body.
pub fn encode_items(items: &[WorkItem]) -> Vec<u8> {
    let kept: Vec<Kept> = items.iter().map(Kept::of).collect();
    serde_json::to_vec(&kept).unwrap_or_default()
}

/// A snapshot's body as work items; `None` when it is not one this build
/// wrote (the board is then listed again).
pub fn decode_items(body: &[u8]) -> Option<Vec<WorkItem>> {
    let kept: Vec<Kept> = serde_json::from_slice(body).ok()?;
    Some(kept.into_iter().map(Kept::into_item).collect())
}

/// One work item as a board hint.
pub fn encode_hint(item: &WorkItem) -> Vec<u8> {
    serde_json::to_vec(&Kept::of(item)).unwrap_or_default()
}

/// A board hint as the work item it names; `None` when it is not one.
pub fn decode_hint(hint: &[u8]) -> Option<WorkItem> {
    serde_json::from_slice::<Kept>(hint)
        .ok()
        .map(Kept::into_item)
}

/// What one look at the shared board gives a runner.
#[derive(Debug, Default)]
pub struct BoardView {
    /// The project's work items, as listed.
    pub items: Vec<WorkItem>,
    /// When their listing began (by the store's clock): a webhook's news
    /// of a change before it is no news.
    pub listed_at: Option<SystemTime>,
    /// Tasks admitted or finished since the listing began: the listing's
    /// word on them is stale.
    pub changed: HashSet<TaskId>,
}

/// The board as every runner sharing a store sees it.
#[derive(Debug, Clone)]
pub struct SharedBoard {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: String,
    /// How old the snapshot may be, in milliseconds: the poll interval
    /// (shorter while webhook deliveries are being missed).
    max_age: Arc<AtomicU64>,
    /// Set once the store failed a look, so the fallback is said once.
    warned: Arc<AtomicBool>,
    /// The listing this process was given and has not stored (in progress,
    /// or its listing failed: its next look lists again, rather than wait
    /// for itself), and the claim's end as last held.
    claimed: Arc<Mutex<Option<Claim>>>,
}

/// A listing this process claimed.
#[derive(Debug, Clone, Copy)]
struct Claim {
    listed_at: Timestamp,
    events_seen: u64,
    until: Timestamp,
}

/// Renews a listing's claim while it lives; dropped (the listing done,
/// failed, or abandoned), it stops.
struct Holding(tokio::task::JoinHandle<()>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SharedBoard {
    /// The board of `config`'s project in `store`, listed again when its
    /// snapshot is `max_age` old (the runners' poll interval).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        max_age: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            key: board_key(config),
            max_age: Arc::new(AtomicU64::new(millis(max_age))),
            warned: Arc::new(AtomicBool::new(false)),
            claimed: Arc::new(Mutex::new(None)),
        }
    }

    /// The board: the snapshot when it is young enough, else listed from
    /// Plane by this process (when no other is listing it) and stored for
    /// the others. A store that cannot be reached makes this process list
    /// the board itself, as if alone.
    pub async fn look(&self, plane: &dyn Plane) -> Result<BoardView, PlaneError> {
        loop {
            let (key, max_age, now) = (self.key.clone(), self.max_age(), self.clock.now());
            let look = on_store(&self.store, move |s| {
                s.board_look(&key, max_age, listing_for(max_age), now)
            })
            .await;
            let snapshot = match look {
                Err(error) => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "the shared board cannot be read; this process lists the board itself");
                    }
                    return self.list_alone(plane).await;
                }
                Ok(BoardLook::YoursToList {
                    listed_at,
                    events_seen,
                    until,
                    ..
                }) => {
                    let claim = Claim {
                        listed_at,
                        events_seen,
                        until,
                    };
                    return self.list(plane, claim).await;
                }
                Ok(BoardLook::Fresh(snapshot)) => snapshot,
                Ok(BoardLook::BeingListed { previous, .. }) => {
                    // The listing in progress is this process's own, which
                    // failed: list again rather than wait for itself.
                    if let Some(claim) = self.claim() {
                        return self.list(plane, claim).await;
                    }
                    match previous {
                        Some(snapshot) => snapshot,
                        None => {
                            tokio::time::sleep(LISTING_WAIT).await;
                            continue;
                        }
                    }
                }
            };
            // A snapshot this build cannot read: this process lists the
            // board for itself; it is listed again for everyone when due.
            return match self.view_of(&snapshot).await {
                Some(view) => Ok(view),
                None => self.list_alone(plane).await,
            };
        }
    }

    async fn list(&self, plane: &dyn Plane, claim: Claim) -> Result<BoardView, PlaneError> {
        // A listing that fails, or whose snapshot cannot be stored, keeps
        // the claim (no longer renewed): this process tries again at its
        // next look, and the others keep the last snapshot until it
        // succeeds or the claim runs out.
        let Claim {
            listed_at,
            events_seen,
            ..
        } = claim;
        *self.claimed.lock().unwrap_or_else(|e| e.into_inner()) = Some(claim);
        let holding = self.hold();
        let items = plane.list_work_items().await?;
        drop(holding);
        let body = encode_items(&items);
        let (key, now) = (self.key.clone(), self.clock.now());
        let put = on_store(&self.store, move |s| {
            s.put_board(&key, listed_at, events_seen, &body, now)
        })
        .await;
        match put {
            Ok(()) => *self.claimed.lock().unwrap_or_else(|e| e.into_inner()) = None,
            Err(error) => {
                tracing::warn!(%error, "could not store the board's snapshot; the next look lists it again")
            }
        }
        tracing::debug!(items = items.len(), "listed the board for every runner");
        let changed = self.changed_since(events_seen).await;
        Ok(BoardView {
            items,
            listed_at: Some(listed_at.to_system_time()),
            changed,
        })
    }

    /// How old a snapshot may be before this process lists the board.
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age.load(Ordering::Relaxed))
    }

    /// Looks at snapshots no older than `max_age` from now on (a runner
    /// polling faster while webhook deliveries are missed).
    pub fn set_max_age(&self, max_age: Duration) {
        self.max_age.store(millis(max_age), Ordering::Relaxed);
    }

    fn claim(&self) -> Option<Claim> {
        *self.claimed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews this process's claim every third of its length until the
    /// returned guard is dropped, or the claim is found to be another's.
    fn hold(&self) -> Holding {
        let this = self.clone();
        let length = listing_for(self.max_age());
        Holding(tokio::spawn(async move {
            loop {
                tokio::time::sleep(length / 3).await;
                let Some(claim) = this.claim() else { return };
                let (key, now) = (this.key.clone(), this.clock.now());
                let held = on_store(&this.store, move |s| {
                    s.hold_listing(&key, claim.until, length, now)
                })
                .await;
                match held {
                    Ok(Some(until)) => {
                        let mut claimed = this.claimed.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(mine) = claimed.as_mut() {
                            mine.until = until;
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(
                            "the board's listing claim lapsed; another process lists it"
                        );
                        return;
                    }
                    // Tried again at the next third; the claim may lapse.
                    Err(error) => {
                        tracing::debug!(%error, "could not hold the board's listing claim")
                    }
                }
            }
        }))
    }

    /// Gives up a listing this process claimed and has not stored (it is
    /// stopping): another process lists the board at its next look, rather
    /// than wait for the claim to lapse.
    pub async fn give_up(&self) {
        let Some(claim) = self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let (key, now) = (self.key.clone(), self.clock.now());
        let given = on_store(&self.store, move |s| {
            s.hold_listing(&key, claim.until, Duration::ZERO, now)
        })
        .await;
        match given {
            Ok(_) => tracing::debug!("gave up the board's listing claim"),
            Err(error) => {
                tracing::warn!(%error, "could not give up the board's listing claim; it lapses on its own")
            }
        }
    }

    async fn list_alone(&self, plane: &dyn Plane) -> Result<BoardView, PlaneError> {
        let listed_at = SystemTime::now();
        Ok(BoardView {
            items: plane.list_work_items().await?,
            listed_at: Some(listed_at),
            changed: HashSet::new(),
        })
    }

    async fn view_of(&self, snapshot: &BoardSnapshot) -> Option<BoardView> {
        let items = decode_items(&snapshot.body)?;
        Some(BoardView {
            items,
            listed_at: Some(snapshot.listed_at.to_system_time()),
            changed: self.changed_since(snapshot.events_seen).await,
        })
    }

    /// Tasks with a start or a finish in the audit log after `seq`. A
    /// failed read returns none: the re-read before a claim still guards.
    async fn changed_since(&self, seq: u64) -> HashSet<TaskId> {
        let events = on_store(&self.store, move |s| {
            s.events_after(seq, EVENTS_SINCE_LIMIT)
        })
        .await;
        let Ok(events) = events else {
            return HashSet::new();
        };
        events
            .into_iter()
            .filter_map(|event| match event.kind {
                EventKind::Started { key, .. } | EventKind::Finished { key, .. } => {
                    Some(key.task_id)
                }
                _ => None,
            })
            .collect()
    }

    /// The hints after `after` as work items, and the number to ask from
    /// next. A failed read returns none and asks from `after` again.
    pub async fn hints_after(&self, after: u64) -> (Vec<WorkItem>, u64) {
        let key = self.key.clone();
        match on_store(&self.store, move |s| s.board_hints_after(&key, after)).await {
            Ok(hints) => (
                hints.hints.iter().filter_map(|h| decode_hint(h)).collect(),
                hints.last,
            ),
            Err(error) => {
                tracing::debug!(%error, "could not read the board's hints");
                (Vec::new(), after)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_item_comes_back_as_it_was_listed() {
        let listed: Vec<WorkItem> = serde_json::from_str(
            r##"[{"id":"a1","name":"first","state":"s1","labels":["l1","l2"],"created_at":"2026-11-28T18:07:01.324Z"},
                 {"id":"a2","name":"second","state":{"id":"s2","name":"Todo","color":"#fff","group":"unstarted"},"labels":[{"id":"l3","name":"x","color":""}],"created_at":"2026-11-28T18:07:02Z"}]"##,
        )
        .unwrap();
        let back = decode_items(&encode_items(&listed)).unwrap();
        assert_eq!(back.len(), 2);
        for (was, is) in listed.iter().zip(&back) {
            assert_eq!(
                (&was.id, &was.name, &was.created_at),
                (&is.id, &is.name, &is.created_at)
            );
            assert_eq!(was.state, is.state);
            let ids = |item: &WorkItem| {
                item.labels
                    .iter()
                    .map(|l| l.id().to_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(was), ids(is));
        }
        assert!(decode_items(b"not json").is_none());
        assert_eq!(decode_hint(&encode_hint(&listed[1])).unwrap().id, "a2");
    }
}
