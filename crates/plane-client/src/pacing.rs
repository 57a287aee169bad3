//! Staying inside Plane's request budget before hitting the wall.
//!
//! Two sources of truth, because the budget is shared by every process that
//! uses the same key:
//! - this client's own sends, kept in a sliding window as long as the
//!   server's, so that it alone never exceeds the limit;
//! - the server's `X-RateLimit-Remaining`, which counts everyone's sends. When
//!   the others have used it up, this client waits for `X-RateLimit-Reset`.
//!   A 429's `Retry-After` pauses every request of this client.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::RateLimit;

#[derive(Debug)]
pub(crate) struct Pacer {
    limit: RateLimit,
    state: Mutex<PacerState>,
}

#[derive(Debug, Default)]
struct PacerState {
    sent: VecDeque<Instant>,
    /// The server's last word: how many requests remained, when it said so,
    /// and when its window resets.
    server: Option<(u32, Instant, Instant)>,
    /// No request before this (a 429's Retry-After).
    paused_until: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new(PacerState::default()),
        }
    }

    /// Waits until a request may be sent, and counts it as sent.
    pub(crate) async fn acquire(&self) {
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

    fn wait_needed(&self, state: &mut PacerState, now: Instant) -> Duration {
        let window = self.limit.per;
        // The server counts arrivals, which lag sends by a varying latency:
        // counting a little past the window keeps the two counts from
        // disagreeing at the edge.
        let margin = (window / 50).max(Duration::from_millis(50));
        while state
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window + margin)
        {
            state.sent.pop_front();
        }
        if let Some(until) = state.paused_until {
            if until > now {
                return until - now;
            }
            state.paused_until = None;
        }
        if state.sent.len() >= self.limit.requests as usize
            && let Some(oldest) = state.sent.front()
        {
            return (*oldest + window + margin).saturating_duration_since(now);
        }
        if let Some((remaining, said_at, reset_at)) = state.server {
            let sent_since = state.sent.iter().filter(|t| **t >= said_at).count();
            if sent_since >= remaining as usize && reset_at > now {
                return reset_at - now;
            }
            if reset_at <= now {
                state.server = None;
            }
        }
        Duration::ZERO
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
        state.server = Some((remaining, now, now + reset_in));
    }

    /// Pauses every request for `wait` (a 429's Retry-After).
    pub(crate) fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
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

    #[test]
    fn the_servers_remaining_count_is_respected() {
        let pacer = Pacer::new(RateLimit::default());
        let mut state = PacerState::default();
        let t0 = Instant::now();
        state.server = Some((1, t0, t0 + Duration::from_secs(30)));
        assert_eq!(pacer.wait_needed(&mut state, t0), Duration::ZERO);
        state.sent.push_back(t0);
        assert_eq!(pacer.wait_needed(&mut state, t0), Duration::from_secs(30));
    }
}
