//! Staying inside Plane's request budget before hitting the wall.
//!
//! Plane's throttle is a sliding log: a key may make `limit` requests in
//! any window of 60 seconds, and every allowed answer says how many remain
//! (`X-RateLimit-Remaining`). Its `X-RateLimit-Reset` is always "now + 60"
//! and says nothing about when a slot frees, so the pacer never waits for it
//! when it knows better. Two sources of truth, because the budget is shared
//! by every process that uses the same key:
//! - this client's own sends, kept in a sliding window as long as the
//!   server's, so that it alone never exceeds its limit;
//! - the server's last `X-RateLimit-Remaining`, which counts everyone's
//!   sends. Since then, this client's own sends used some of it, and those
//!   of its sends that the server had counted and that have since left the
//!   window gave some back. When that estimate is zero, the pacer waits for
//!   the next of its own counted sends to leave the window, and for the
//!   server's reset only when none of the counted sends was its own.
//!
//! A 429's `Retry-After` (exact on Plane) pauses every request of this
//! client. Every wait is a plain `tokio` sleep, so dropping the call that
//! waits (at shutdown) cancels it, and a cancelled wait counts no send
//! (except a shared take already on its way to the store, which costs the
//! fleet one request's worth of budget).
//!
//! With a [`SharedBudget`] (every process using the key draws from one
//! window kept elsewhere, the ledger's store in inflight), the shared
//! window decides instead: it counts every send of the fleet exactly, and
//! a 429's pause is passed on to the whole fleet. The server's word still
//! counts: it counts everyone's sends, the fleet's and those of anything
//! else using the key (another program, a one-off run). When it says more
//! are used than the shared window held at this client's take, the window
//! is told ([`SharedBudget::note_used`]) and takes in what the fleet did
//! not send, before this client takes again. When the shared budget cannot
//! be reached, the client paces itself alone, as without one, and says so
//! once.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::RateLimit;

/// A request budget shared by every process that uses one API key: a
/// sliding window of takes, kept where all of them see it. Calls block (a
/// database or file commit); the client runs them on tokio's blocking
/// pool.
pub trait SharedBudget: Send + Sync + fmt::Debug {
    /// Takes one request from `key`'s window (at most `limit` in any
    /// `window`) if it has room and no pause holds it.
    fn take(&self, key: &str, limit: u32, window: Duration) -> Result<SharedTake, String>;

    /// Holds every take from `key` for `wait` (a 429's `Retry-After`).
    fn pause(&self, key: &str, wait: Duration) -> Result<(), String>;

    /// The server's word that `used` requests of `key` are in its window
    /// now: the window takes in those the fleet did not send.
    fn note_used(&self, key: &str, used: u32, window: Duration) -> Result<(), String>;
}

/// What a shared budget answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedTake {
    /// Taken: the request may go.
    Taken {
        /// Takes in the window now, this one included.
        in_window: u32,
    },
    /// Not taken: ask again in `wait`.
    Wait {
        /// Until a take leaves the window or the pause ends.
        wait: Duration,
        /// Takes in the window now.
        in_window: u32,
        /// Whether a 429's pause holds it.
        paused: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Pacer {
    limit: RateLimit,
    state: Mutex<PacerState>,
    shared: Option<Shared>,
}

/// The shared budget and the key's name in it.
#[derive(Debug)]
struct Shared {
    budget: Arc<dyn SharedBudget>,
    key: String,
    /// Whether the last call to it failed (so a failure is logged once).
    failing: AtomicBool,
}

/// The server's last word on the budget.
#[derive(Debug, Clone)]
struct ServerWord {
    /// `X-RateLimit-Remaining`.
    remaining: u32,
    /// When it was said (the answer arrived).
    said_at: Instant,
    /// `X-RateLimit-Reset`, clamped to one window.
    reset_at: Instant,
    /// This client's sends that the server's count included: those within
    /// one window before `said_at`, oldest first.
    counted_own: Vec<Instant>,
}

#[derive(Debug, Default)]
struct PacerState {
    sent: VecDeque<Instant>,
    server: Option<ServerWord>,
    /// No request before this (a 429's Retry-After).
    paused_until: Option<Instant>,
    /// The shared window's count at this client's last take (and any word
    /// of the server's passed on since).
    shared_in_window: u32,
    /// The server's word on its way to the shared window: the next take
    /// waits for it.
    noting: Option<tokio::task::JoinHandle<()>>,
}

impl Pacer {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new(PacerState::default()),
            shared: None,
        }
    }

    /// A pacer drawing from `budget` under `key` (the API key's
    /// fingerprint).
    pub(crate) fn shared(limit: RateLimit, budget: Arc<dyn SharedBudget>, key: String) -> Self {
        Self {
            shared: Some(Shared {
                budget,
                key,
                failing: AtomicBool::new(false),
            }),
            ..Self::new(limit)
        }
    }

    /// The server counts arrivals, which lag sends by a varying latency:
    /// counting a little past the window keeps the two counts from
    /// disagreeing at the edge.
    fn margin(&self) -> Duration {
        (self.limit.per / 50).max(Duration::from_millis(50))
    }

    /// Waits until a request may be sent, and counts it as sent.
    pub(crate) async fn acquire(&self) {
        if let Some(shared) = &self.shared
            && self.acquire_shared(shared).await
        {
            return;
        }
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let wait = self.wait_needed(&mut state, now);
                if wait.is_zero() {
                    state.sent.push_back(now);
                }
                wait
            };
            if wait.is_zero() {
                return;
            }
            tracing::debug!(wait_ms = wait.as_millis() as u64, "pacing Plane requests");
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a request from the shared budget, waiting as it says; `false`
    /// when it cannot be reached (the caller paces alone).
    async fn acquire_shared(&self, shared: &Shared) -> bool {
        let window = self.counted_window();
        let limit = self.limit.requests;
        loop {
            // This process's own 429 pause, before asking anyone.
            let paused = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                self.forget_old_sends(&mut state, now);
                paused_for(&mut state, now)
            };
            if !paused.is_zero() {
                tokio::time::sleep(paused).await;
                continue;
            }
            let noting = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.noting.take()
            };
            if let Some(noting) = noting {
                let _ = noting.await;
            }
            let (budget, key) = (shared.budget.clone(), shared.key.clone());
            let answer = tokio::task::spawn_blocking(move || budget.take(&key, limit, window))
                .await
                .unwrap_or_else(|e| Err(format!("the budget call failed: {e}")));
            match answer {
                Ok(SharedTake::Taken { in_window }) => {
                    if shared.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("the shared Plane budget answers again");
                    }
                    let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    state.sent.push_back(Instant::now());
                    state.shared_in_window = in_window;
                    return true;
                }
                Ok(SharedTake::Wait {
                    wait,
                    in_window,
                    paused,
                }) => {
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        in_window,
                        limit,
                        paused,
                        "waiting for the shared Plane budget"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(error) => {
                    if !shared.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "the shared Plane budget cannot be reached; pacing this process alone");
                    }
                    return false;
                }
            }
        }
    }

    /// How long a send counts against the budget here: the server counts
    /// arrivals, a little after our sends, so a little longer than its
    /// window.
    fn counted_window(&self) -> Duration {
        self.limit.per + self.margin()
    }

    /// When one of this client's sends leaves the window.
    fn leaves(&self, sent: Instant) -> Instant {
        sent + self.counted_window()
    }

    /// Drops the sends that have left the window (kept in both modes: a
    /// shared budget that stops answering leaves this client pacing alone
    /// from its own recent sends).
    fn forget_old_sends(&self, state: &mut PacerState, now: Instant) {
        while state.sent.front().is_some_and(|t| self.leaves(*t) <= now) {
            state.sent.pop_front();
        }
    }

    fn wait_needed(&self, state: &mut PacerState, now: Instant) -> Duration {
        self.forget_old_sends(state, now);
        let paused = paused_for(state, now);
        if !paused.is_zero() {
            return paused;
        }
        if state.sent.len() >= self.limit.requests as usize
            && let Some(oldest) = state.sent.front()
        {
            return self.leaves(*oldest).saturating_duration_since(now);
        }
        let Some(word) = &state.server else {
            return Duration::ZERO;
        };
        if word.reset_at <= now {
            // A whole window has passed since the server spoke: everything
            // it counted then has left.
            state.server = None;
            return Duration::ZERO;
        }
        let given_back = word
            .counted_own
            .iter()
            .filter(|t| self.leaves(**t) <= now)
            .count();
        let used_since = state.sent.iter().filter(|t| **t >= word.said_at).count();
        if word.remaining as usize + given_back > used_since {
            return Duration::ZERO;
        }
        // The next of our own counted sends to leave frees a slot; if the
        // server's count held none of ours (others used the key), only its
        // reset is sure.
        word.counted_own
            .iter()
            .map(|t| self.leaves(*t))
            .find(|at| *at > now)
            .map_or(word.reset_at, |at| at.min(word.reset_at))
            .saturating_duration_since(now)
    }

    /// Takes in the rate-limit headers of an allowed response.
    pub(crate) fn observe(&self, remaining: Option<&str>, reset: Option<&str>) {
        let Some(remaining) = remaining.and_then(|r| r.trim().parse::<u32>().ok()) else {
            return;
        };
        let now = Instant::now();
        // Plane's reset is "now + 60 s" in Unix seconds, never more than one
        // window ahead; anything else is clamped to the window.
        let reset_in = reset
            .and_then(|r| r.trim().parse::<u64>().ok())
            .and_then(|epoch| {
                let now_epoch = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                Some(Duration::from_secs(epoch.saturating_sub(now_epoch)))
            })
            .unwrap_or(self.limit.per)
            .min(self.limit.per);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.server = Some(ServerWord {
            remaining,
            said_at: now,
            reset_at: now + reset_in,
            counted_own: state
                .sent
                .iter()
                .copied()
                .filter(|t| now.duration_since(*t) < self.limit.per)
                .collect(),
        });
        // The server counted more than the shared window held at this
        // client's take: others sent since (the fleet, which the window
        // knows of, or something outside it, which it learns of now).
        let used = self.limit.requests.saturating_sub(remaining);
        if let Some(shared) = &self.shared
            && used > state.shared_in_window
        {
            state.shared_in_window = used;
            let (budget, key) = (shared.budget.clone(), shared.key.clone());
            let window = self.counted_window();
            state.noting = Some(tokio::task::spawn_blocking(move || {
                if let Err(error) = budget.note_used(&key, used, window) {
                    tracing::debug!(%error, "could not pass Plane's count on to the shared budget");
                }
            }));
        }
    }

    /// Pauses every request for `wait` (a 429's Retry-After), and every
    /// request of the fleet when the budget is shared.
    pub(crate) fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        }
        if let Some(shared) = &self.shared {
            let (budget, key) = (shared.budget.clone(), shared.key.clone());
            // Not awaited: this process's own pause already holds its
            // requests; the others learn of it as soon as the store does.
            tokio::task::spawn_blocking(move || {
                if let Err(error) = budget.pause(&key, wait) {
                    tracing::warn!(%error, "could not pass a 429's pause on to the shared Plane budget");
                }
            });
        }
    }
}

/// What is left of a 429's pause at `now` (zero when none), forgetting one
/// that has ended.
fn paused_for(state: &mut PacerState, now: Instant) -> Duration {
    match state.paused_until {
        Some(until) if until > now => until - now,
        Some(_) => {
            state.paused_until = None;
            Duration::ZERO
        }
        None => Duration::ZERO,
    }
}

/// Reads a `Retry-After` header: whole seconds, or an HTTP date (a date in
/// the past means "now"). `None` when it is neither.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("52"), Some(Duration::from_secs(52)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_own_window_blocks_at_the_limit() {
        let pacer = Pacer::new(RateLimit {
            requests: 2,
            per: Duration::from_secs(10),
        });
        let mut state = PacerState::default();
        let t0 = Instant::now();
        state.sent.push_back(t0);
        state.sent.push_back(t0);
        // Ten seconds after the oldest send, plus a margin of 1/50 of the
        // window (at least 50 ms) for the latency between send and arrival.
        let wait = pacer.wait_needed(&mut state, t0 + Duration::from_secs(4));
        assert_eq!(wait, Duration::from_millis(6200));
        assert_eq!(
            pacer.wait_needed(&mut state, t0 + Duration::from_millis(10_200)),
            Duration::ZERO
        );
    }

    fn word(remaining: u32, said_at: Instant, counted_own: Vec<Instant>) -> ServerWord {
        ServerWord {
            remaining,
            said_at,
            reset_at: said_at + Duration::from_secs(60),
            counted_own,
        }
    }

    #[test]
    fn the_servers_remaining_count_is_respected() {
        let pacer = Pacer::new(RateLimit::default());
        let mut state = PacerState::default();
        let t0 = Instant::now();
        state.server = Some(word(1, t0, vec![]));
        assert_eq!(pacer.wait_needed(&mut state, t0), Duration::ZERO);
        state.sent.push_back(t0);
        // Others used the rest, and none of what the server counted was
        // ours: only its reset is sure.
        assert_eq!(pacer.wait_needed(&mut state, t0), Duration::from_secs(60));
    }

    /// Real Plane's reset is always now + 60 s. A client whose own 60
    /// sends spread over 53 s used the budget up; its oldest send leaves
    /// the window 7 s later, and that is how long it waits, not 60 s.
    #[test]
    fn an_exhausted_budget_waits_for_the_oldest_own_send_not_for_the_reset() {
        let pacer = Pacer::new(RateLimit::default());
        let margin = pacer.margin();
        let mut state = PacerState::default();
        let t0 = Instant::now();
        let sends: Vec<Instant> = (0..60)
            .map(|i| t0 + Duration::from_millis(i * 53_000 / 59))
            .collect();
        state.sent.extend(sends.iter().copied());
        // The last send's answer arrives 100 ms after it left.
        let said = t0 + Duration::from_millis(53_100);
        state.server = Some(word(0, said, sends.clone()));
        let wait = pacer.wait_needed(&mut state, said);
        assert_eq!(wait, Duration::from_millis(6_900) + margin);
        // Once the oldest left, one request may go, and the next waits for
        // the second oldest: never longer than the window requires.
        let later = said + wait;
        assert_eq!(pacer.wait_needed(&mut state, later), Duration::ZERO);
        state.sent.push_back(later);
        let next = pacer.wait_needed(&mut state, later);
        assert_eq!(later + next, sends[1] + Duration::from_secs(60) + margin);
    }

    /// The server said 3 remain; the client's own count does not stop it
    /// from using them, and it stops after them.
    #[test]
    fn what_the_server_says_remains_is_used_and_no_more() {
        let pacer = Pacer::new(RateLimit::default());
        let mut state = PacerState::default();
        let t0 = Instant::now();
        state.server = Some(word(3, t0, vec![]));
        for i in 0..3 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(
                pacer.wait_needed(&mut state, at),
                Duration::ZERO,
                "send {i}"
            );
            state.sent.push_back(at);
        }
        assert!(pacer.wait_needed(&mut state, t0 + Duration::from_millis(3)) > Duration::ZERO);
    }
}
