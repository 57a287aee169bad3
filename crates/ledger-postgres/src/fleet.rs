//! The fleet's side of the PostgreSQL store ([`FleetStore`]): a Plane
//! key's budget, the board snapshot and its hints, in tables of the same
//! schema (a snapshot records where the audit log stood). Every host
//! sharing the schema shares them.

use std::time::Duration;

use ledger_core::{
    BoardHints, BoardLook, BoardSnapshot, BoardStep, BudgetAnswer, BudgetState, FleetStore, Result,
    Timestamp,
};

use crate::sql::{Fail, Step, settle, transact};
use crate::store::{PgLedger, millis, now_sql, query};

const BOARD_READ: &str = "SELECT * FROM {s}.board_read($1, $2)";
// A look without the row's lock (see `board_look`): what `board_read`
// answers, read from the committed row.
const BOARD_PEEK: &str = concat!(
    "SELECT ",
    now_sql!(2),
    ", listed_at, events_seen, listing_until, body, ",
    "(SELECT coalesce(max(seq), 0) FROM {s}.events) FROM {s}.boards WHERE key = $1"
);
const BOARD_CLAIM: &str = "UPDATE {s}.boards SET listing_until = $2 WHERE key = $1";
// `ledger_core::listing_hold` in one statement, by the database's clock.
const BOARD_HOLD: &str = concat!(
    "UPDATE {s}.boards SET listing_until = ",
    now_sql!(4),
    " + $3::bigint WHERE key = $1 AND listing_until = $2 RETURNING listing_until"
);
// A slow lister never replaces a newer snapshot with an older one.
const BOARD_PUT: &str = "UPDATE {s}.boards SET listing_until = NULL, \
     listed_at = CASE WHEN listed_at IS NULL OR listed_at <= $2 THEN $2 ELSE listed_at END, \
     events_seen = CASE WHEN listed_at IS NULL OR listed_at <= $2 THEN $3 ELSE events_seen END, \
     body = CASE WHEN listed_at IS NULL OR listed_at <= $2 THEN $4 ELSE body END \
     WHERE key = $1";
const BOARD_HINT_ADD: &str = "SELECT {s}.board_hint_add($1, $2, $3, $4)";
// One statement, one snapshot: the newest number and the hints up to it.
const BOARD_HINTS: &str = "SELECT b.last_hint, h.hint FROM {s}.boards b \
     LEFT JOIN {s}.board_hints h ON h.key = b.key AND h.seq > $2 \
     WHERE b.key = $1 ORDER BY h.seq";
const BUDGET_READ: &str = "SELECT * FROM {s}.budget_read($1, $2, $3)";
const BUDGET_TAKE: &str = "SELECT * FROM {s}.budget_take($1, $2, $3, $4)";
const BUDGET_FILL: &str = "INSERT INTO {s}.budget_takes (key, taken_at) \
     SELECT $1, $2 FROM generate_series(1, $3::bigint)";
const BUDGET_STATE: &str = concat!(
    "SELECT (SELECT paused_until FROM {s}.budgets WHERE key = $1), ",
    "ARRAY(SELECT taken_at FROM {s}.budget_takes WHERE key = $1 AND taken_at > ",
    now_sql!(3),
    " - $2), ",
    now_sql!(3)
);
const BUDGET_PAUSE: &str = concat!(
    "INSERT INTO {s}.budgets (key, paused_until) VALUES ($1, ",
    now_sql!(3),
    " + $2::bigint) ON CONFLICT (key) DO UPDATE SET paused_until = ",
    "GREATEST(budgets.paused_until, EXCLUDED.paused_until)"
);

/// A board's row as `board_read` and [`BOARD_PEEK`] answer it: the
/// database's now, the last snapshot, a listing's end, the audit log's
/// newest sequence number.
type BoardRow = (Timestamp, Option<BoardSnapshot>, Option<Timestamp>, u64);

fn board_row(row: &postgres::Row) -> std::result::Result<BoardRow, postgres::Error> {
    let at = Timestamp::from_unix_millis(row.try_get(0)?);
    let listed_at = row
        .try_get::<_, Option<i64>>(1)?
        .map(Timestamp::from_unix_millis);
    let events_seen = u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0);
    let listing_until = row
        .try_get::<_, Option<i64>>(3)?
        .map(Timestamp::from_unix_millis);
    let body: Option<Vec<u8>> = row.try_get(4)?;
    let newest = u64::try_from(row.try_get::<_, i64>(5)?).unwrap_or(0);
    let previous = listed_at.map(|listed_at| BoardSnapshot {
        listed_at,
        events_seen,
        body: body.unwrap_or_default(),
    });
    Ok((at, previous, listing_until, newest))
}

/// `budget_read`'s answer: the database's now, the pause's end, the
/// takes still in the window.
fn budget_row(
    row: &postgres::Row,
) -> std::result::Result<(Timestamp, Option<Timestamp>, Vec<Timestamp>), postgres::Error> {
    let at = Timestamp::from_unix_millis(row.try_get(0)?);
    let paused = row
        .try_get::<_, Option<i64>>(1)?
        .map(Timestamp::from_unix_millis);
    let takes = row
        .try_get::<_, Vec<i64>>(2)?
        .into_iter()
        .map(Timestamp::from_unix_millis)
        .collect();
    Ok((at, paused, takes))
}

impl FleetStore for PgLedger {
    fn take_budget(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetAnswer> {
        let key = key.to_owned();
        let caller_now = self.caller(now);
        let window_ms = millis(window);
        self.worker.run(move |c| {
            // One round trip: `budget_take` counts the window and records
            // the take when there is room; the answer is the rule's, on
            // the same figures.
            let rows = query(
                c,
                BUDGET_TAKE,
                &[&key, &window_ms, &caller_now, &i64::from(limit)],
            )?;
            let location = c.location().to_owned();
            let answer = rows
                .first()
                .map(|row| -> Step<_> {
                    let at = Timestamp::from_unix_millis(row.try_get(0)?);
                    let paused = row
                        .try_get::<_, Option<i64>>(1)?
                        .map(Timestamp::from_unix_millis);
                    let in_window =
                        u32::try_from(row.try_get::<_, i64>(2)?.max(0)).unwrap_or(u32::MAX);
                    let leaving = row
                        .try_get::<_, Option<i64>>(3)?
                        .map(Timestamp::from_unix_millis);
                    let taken: bool = row.try_get(4)?;
                    let answer =
                        ledger_core::budget_counted(in_window, leaving, paused, limit, window, at);
                    if taken != matches!(answer, BudgetAnswer::Taken { .. }) {
                        return Err(Fail::Ledger(crate::worker::database(
                            &location,
                            "budget_take and ledger_core::budget disagree".into(),
                        )));
                    }
                    Ok(answer)
                })
                .transpose();
            settle(c, answer)?.ok_or_else(|| {
                crate::worker::database(&location, "budget_take returned no row".into())
            })
        })
    }

    fn note_budget_used(
        &self,
        key: &str,
        used: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<u32> {
        let key = key.to_owned();
        let caller_now = self.caller(now);
        let window_ms = millis(window);
        self.worker.run(move |c| {
            transact(c, |tx| {
                let read = tx.query_one(BUDGET_READ, &[&key, &window_ms, &caller_now])?;
                let (at, _, takes) = budget_row(&read)?;
                let missing = ledger_core::budget_shortfall(takes.len(), used);
                if missing > 0 {
                    let at = at.as_unix_millis();
                    tx.execute(BUDGET_FILL, &[&key, &at, &i64::from(missing)])?;
                }
                Ok(missing)
            })
        })
    }

    fn budget_state(&self, key: &str, window: Duration, now: Timestamp) -> Result<BudgetState> {
        let key = key.to_owned();
        let caller_now = self.caller(now);
        let window_ms = millis(window);
        self.worker.run(move |c| {
            let rows = query(c, BUDGET_STATE, &[&key, &window_ms, &caller_now])?;
            // One row: the statement reads no table at its top.
            let state = rows
                .first()
                .map_or(Ok(BudgetState::default()), |row| -> Step<_> {
                    let paused: Option<i64> = row.try_get(0)?;
                    let takes: Vec<i64> = row.try_get(1)?;
                    let at = Timestamp::from_unix_millis(row.try_get(2)?);
                    Ok(BudgetState::of(
                        takes.into_iter().map(Timestamp::from_unix_millis),
                        paused.map(Timestamp::from_unix_millis),
                        window,
                        at,
                    ))
                });
            settle(c, state)
        })
    }

    fn pause_budget(&self, key: &str, wait: Duration, now: Timestamp) -> Result<()> {
        let key = key.to_owned();
        let caller_now = self.caller(now);
        let wait_ms = millis(wait);
        self.worker.run(move |c| {
            query(c, BUDGET_PAUSE, &[&key, &wait_ms, &caller_now])?;
            Ok(())
        })
    }

    fn board_look(
        &self,
        key: &str,
        max_age: Duration,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<BoardLook> {
        let key = key.to_owned();
        let caller_now = self.caller(now);
        self.worker.run(move |c| {
            // Most looks find a fresh snapshot or a listing under way, and
            // write nothing: one read, no lock, no transaction. Only a look
            // that would claim the listing takes the row's lock and
            // decides again under it.
            let rows = query(c, BOARD_PEEK, &[&key, &caller_now])?;
            let peeked = rows
                .first()
                .map(|row| -> Step<_> {
                    let (at, previous, listing_until, _) = board_row(row)?;
                    Ok(ledger_core::board_step(
                        previous,
                        listing_until,
                        max_age,
                        listing_for,
                        at,
                    ))
                })
                .transpose();
            if let Some(BoardStep::Answer(look)) = settle(c, peeked)? {
                return Ok(look);
            }
            transact(c, |tx| {
                let row = tx.query_one(BOARD_READ, &[&key, &caller_now])?;
                let (at, previous, listing_until, newest) = board_row(&row)?;
                let step =
                    ledger_core::board_step(previous, listing_until, max_age, listing_for, at);
                Ok(match step {
                    BoardStep::Answer(look) => look,
                    BoardStep::Claim { until, previous } => {
                        tx.execute(BOARD_CLAIM, &[&key, &until.as_unix_millis()])?;
                        BoardLook::YoursToList {
                            listed_at: at,
                            events_seen: newest,
                            until,
                            previous,
                        }
                    }
                })
            })
        })
    }

    fn hold_listing(
        &self,
        key: &str,
        until: Timestamp,
        listing_for: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let key = key.to_owned();
        let caller_now = self.caller(now);
        let (until, listing_ms) = (until.as_unix_millis(), millis(listing_for));
        self.worker.run(move |c| {
            let rows = query(c, BOARD_HOLD, &[&key, &until, &listing_ms, &caller_now])?;
            let held = rows.first().map(|row| row.try_get::<_, i64>(0)).transpose();
            Ok(settle(c, held.map_err(Fail::Db))?.map(Timestamp::from_unix_millis))
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
        let (key, body) = (key.to_owned(), body.to_vec());
        let seen = i64::try_from(events_seen).unwrap_or(i64::MAX);
        self.worker.run(move |c| {
            query(
                c,
                BOARD_PUT,
                &[&key, &listed_at.as_unix_millis(), &seen, &body],
            )?;
            Ok(())
        })
    }

    fn add_board_hint(&self, key: &str, hint: &[u8], now: Timestamp) -> Result<u64> {
        let (key, hint) = (key.to_owned(), hint.to_vec());
        let caller_now = self.caller(now);
        let keep = millis(ledger_core::HINT_RETENTION);
        self.worker.run(move |c| {
            let rows = query(c, BOARD_HINT_ADD, &[&key, &hint, &caller_now, &keep])?;
            let seq = rows.first().map(|row| row.try_get::<_, i64>(0)).transpose();
            let seq = settle(c, seq.map_err(Fail::Db))?;
            Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
        })
    }

    fn board_hints_after(&self, key: &str, after: u64) -> Result<BoardHints> {
        let key = key.to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.worker.run(move |c| {
            let rows = query(c, BOARD_HINTS, &[&key, &after])?;
            let read = (|| {
                let mut out = BoardHints::default();
                for row in &rows {
                    out.last = u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
                    if let Some(hint) = row.try_get::<_, Option<Vec<u8>>>(1)? {
                        out.hints.push(hint);
                    }
                }
                Ok(out)
            })();
            settle(c, read.map_err(Fail::Db))
        })
    }
}
