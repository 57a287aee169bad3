//! The fleet's side of the redb store ([`FleetStore`]): a Plane key's
//! budget, the board snapshot and its hints, in tables of their own in
//! the same file (a snapshot records where the audit log stood).

use std::time::Duration;

use redb::ReadableTable;

use super::*;
use crate::FleetStore;

impl FleetStore for Ledger {
    fn take_budget(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<crate::BudgetAnswer> {
        self.update_budget(key, Some(now.saturating_sub(window)), |record| {
            let answer = crate::budget(&record.takes, record.paused_until, limit, window, now);
            if matches!(answer, crate::BudgetAnswer::Taken { .. }) {
                record.takes.push(now);
            }
            answer
        })
    }

    fn note_budget_used(
        &self,
        key: &str,
        used: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<u32> {
        // Most words of Plane's find nothing missing: no commit (and no
        // flush) for those.
        let start = now.saturating_sub(window);
        let missing = self.read(|txn| {
            let table = txn.open_table(PLANE_BUDGET).or_storage(self)?;
            let takes = match table.get(key).or_storage(self)? {
                Some(v) => self
                    .decode::<BudgetRecord>("plane_budget", v.value())?
                    .takes
                    .iter()
                    .filter(|t| **t > start)
                    .count(),
                None => 0,
            };
            Ok(crate::budget_shortfall(takes, used))
        })?;
        if missing == 0 {
            return Ok(0);
        }
        self.update_budget(key, Some(start), |record| {
            let missing = crate::budget_shortfall(record.takes.len(), used);
            record
                .takes
                .extend(std::iter::repeat_n(now, missing as usize));
            missing
        })
    }

    fn budget_state(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<crate::BudgetState> {
        self.read(|txn| {
            // A ledger no process has taken a budget from has no table yet.
            let table = match txn.open_table(PLANE_BUDGET) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(crate::BudgetState::default());
                }
                Err(e) => return Err(self.storage(e)),
            };
            let record: BudgetRecord = match table.get(key).or_storage(self)? {
                Some(v) => self.decode("plane_budget", v.value())?,
                None => BudgetRecord::default(),
            };
            Ok(crate::BudgetState::of(
                record.takes,
                record.paused_until,
                window,
                now,
            ))
        })
    }

    fn pause_budget(&self, key: &str, wait: Duration, now: Timestamp) -> Result<()> {
        let until = now.saturating_add(wait);
        self.update_budget(key, None, |record| {
            record.paused_until = Some(record.paused_until.map_or(until, |u| u.max(until)));
        })
    }

    fn hold_listing(
        &self,
        key: &str,
        until: Timestamp,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        self.write(|txn| {
            let mut boards = txn.open_table(BOARDS).or_storage(self)?;
            let mut record = self.board_record(&boards, key)?;
            let Some(held) = crate::listing_hold(record.listing_until, until, listing_for, now)
            else {
                return Ok(Tx::Abort(None));
            };
            record.listing_until = Some(held);
            let bytes = self.encode("boards", &record)?;
            boards.insert(key, bytes.as_slice()).or_storage(self)?;
            Ok(Tx::Commit(Some(held)))
        })
    }

    fn board_look(
        &self,
        key: &str,
        max_age: Duration,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<crate::BoardLook> {
        self.write(|txn| {
            let mut boards = txn.open_table(BOARDS).or_storage(self)?;
            let mut record = self.board_record(&boards, key)?;
            let snapshot = |record: &BoardRecord| -> Result<Option<crate::BoardSnapshot>> {
                let Some(listed_at) = record.listed_at else {
                    return Ok(None);
                };
                let bodies = txn.open_table(BOARD_BODIES).or_storage(self)?;
                let body = bodies.get(key).or_storage(self)?;
                Ok(Some(crate::BoardSnapshot {
                    listed_at,
                    events_seen: record.events_seen,
                    body: body.map(|b| b.value().to_vec()).unwrap_or_default(),
                }))
            };
            let previous = snapshot(&record)?;
            let step = crate::board_step(previous, record.listing_until, max_age, listing_for, now);
            let look = match step {
                // A look that changes nothing skips the commit and its fsync.
                crate::BoardStep::Answer(look) => return Ok(Tx::Abort(look)),
                crate::BoardStep::Claim { until, previous } => {
                    record.listing_until = Some(until);
                    let bytes = self.encode("boards", &record)?;
                    boards.insert(key, bytes.as_slice()).or_storage(self)?;
                    let events = txn.open_table(EVENTS).or_storage(self)?;
                    let events_seen = events
                        .last()
                        .or_storage(self)?
                        .map_or(0, |(k, _)| k.value());
                    crate::BoardLook::YoursToList {
                        listed_at: now,
                        events_seen,
                        until,
                        previous,
                    }
                }
            };
            Ok(Tx::Commit(look))
        })
    }

    fn put_board(
        &self,
        key: &str,
        listed_at: Timestamp,
        events_seen: u64,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<()> {
        self.write(|txn| {
            let mut boards = txn.open_table(BOARDS).or_storage(self)?;
            let mut record = self.board_record(&boards, key)?;
            // A slow lister never replaces a newer snapshot with an older one.
            if record.listed_at.is_none_or(|held| held <= listed_at) {
                record.listed_at = Some(listed_at);
                record.events_seen = events_seen;
                let mut bodies = txn.open_table(BOARD_BODIES).or_storage(self)?;
                bodies.insert(key, body).or_storage(self)?;
            }
            record.listing_until = None;
            let bytes = self.encode("boards", &record)?;
            boards.insert(key, bytes.as_slice()).or_storage(self)?;
            Ok(Tx::Commit(()))
        })
    }

    fn add_board_hint(&self, key: &str, hint: &[u8], now: Timestamp) -> Result<u64> {
        self.write(|txn| {
            let mut boards = txn.open_table(BOARDS).or_storage(self)?;
            let mut record = self.board_record(&boards, key)?;
            record.last_hint += 1;
            let seq = record.last_hint;
            let bytes = self.encode("boards", &record)?;
            boards.insert(key, bytes.as_slice()).or_storage(self)?;
            let mut hints = txn.open_table(BOARD_HINTS).or_storage(self)?;
            let stale = now.saturating_sub(crate::HINT_RETENTION);
            let mut old = Vec::new();
            for entry in hints.range((key, 0)..(key, seq)).or_storage(self)? {
                let (k, v) = entry.or_storage(self)?;
                let held: HintRecord = self.decode("board_hints", v.value())?;
                if held.at > stale {
                    break;
                }
                old.push(k.value().1);
            }
            for n in old {
                hints.remove((key, n)).or_storage(self)?;
            }
            let record = self.encode(
                "board_hints",
                &HintRecord {
                    at: now,
                    hint: String::from_utf8_lossy(hint).into_owned(),
                },
            )?;
            hints
                .insert((key, seq), record.as_slice())
                .or_storage(self)?;
            Ok(Tx::Commit(seq))
        })
    }

    fn board_hints_after(&self, key: &str, after: u64) -> Result<crate::BoardHints> {
        self.read(|txn| {
            let boards = match txn.open_table(BOARDS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(crate::BoardHints::default());
                }
                Err(e) => return Err(self.storage(e)),
            };
            let record = self.board_record(&boards, key)?;
            let mut out = crate::BoardHints {
                hints: Vec::new(),
                last: record.last_hint,
            };
            if after >= record.last_hint {
                return Ok(out);
            }
            let hints = txn.open_table(BOARD_HINTS).or_storage(self)?;
            for entry in hints
                .range((key, after.saturating_add(1))..=(key, u64::MAX))
                .or_storage(self)?
            {
                let (_, v) = entry.or_storage(self)?;
                let held: HintRecord = self.decode("board_hints", v.value())?;
                out.hints.push(held.hint.into_bytes());
            }
            Ok(out)
        })
    }
}

/// A shared board as the redb store keeps it (its body is in
/// `board_bodies`, its hints in `board_hints`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct BoardRecord {
    /// When the snapshot's listing began.
    listed_at: Option<Timestamp>,
    /// The audit log's newest sequence number then.
    #[serde(default)]
    events_seen: u64,
    /// Until when a listing in progress holds off other listers.
    listing_until: Option<Timestamp>,
    /// The newest hint's number.
    #[serde(default)]
    last_hint: u64,
}

/// One board hint as the redb store keeps it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct HintRecord {
    at: Timestamp,
    hint: String,
}

impl Ledger {
    fn board_record(
        &self,
        boards: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<BoardRecord> {
        match boards.get(key).or_storage(self)? {
            Some(v) => self.decode("boards", v.value()),
            None => Ok(BoardRecord::default()),
        }
    }
}

/// A Plane key's shared budget as the redb store keeps it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct BudgetRecord {
    /// When a pause (a 429's `Retry-After`) ends.
    paused_until: Option<Timestamp>,
    /// The takes still in the window, oldest first.
    takes: Vec<Timestamp>,
}

impl Ledger {
    /// Reads `key`'s budget, drops the takes made at or before
    /// `window_start` (they left the window), lets `change` decide, and
    /// writes it back.
    fn update_budget<T>(
        &self,
        key: &str,
        window_start: Option<Timestamp>,
        change: impl FnOnce(&mut BudgetRecord) -> T,
    ) -> Result<T> {
        self.write(|txn| {
            let mut table = txn.open_table(PLANE_BUDGET).or_storage(self)?;
            let mut record: BudgetRecord = match table.get(key).or_storage(self)? {
                Some(v) => self.decode("plane_budget", v.value())?,
                None => BudgetRecord::default(),
            };
            if let Some(start) = window_start {
                record.takes.retain(|t| *t > start);
            }
            let answer = change(&mut record);
            let bytes = self.encode("plane_budget", &record)?;
            table.insert(key, bytes.as_slice()).or_storage(self)?;
            Ok(Tx::Commit(answer))
        })
    }
}
