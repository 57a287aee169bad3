//! The ledger's tables in their schema, their version, and migrations.
//!
//! Every table lives in one schema (default `inflight`). The store's
//! statements name it (`{s}.events`, filled in per store), and each
//! function carries it as its own `search_path` ([`function_settings`]):
//! nothing depends on the session's `search_path`, which a pooler such as
//! PgBouncer would not keep. Times are milliseconds since the
//! epoch (`bigint`), as `ledger_core::Timestamp`; records are the ledger's
//! JSON forms (`text`), as the redb store keeps them.

use ledger_core::{LedgerError, Result};
use postgres::types::Type;

use crate::worker::Connection;

/// The schema version this build writes and reads.
pub(crate) const VERSION: u64 = 4;

/// The first half of every advisory lock key of the ledger (the second is
/// a hash of its purpose and the schema name), so they cannot collide with
/// another application's single-key locks on the same database.
pub(crate) const LOCK_CLASS: i32 = 0x1f11_6747;

/// Whether `name` may be a schema name: lower-case letters, digits and
/// underscores, starting with a letter or underscore, at most 63 bytes.
pub fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

fn v1(schema: &str) -> String {
    format!(
        r#"
CREATE TABLE caps (scope text PRIMARY KEY);
CREATE TABLE open_slots (
    backend     text   NOT NULL,
    task_id     text   NOT NULL,
    run_id      text   NOT NULL,
    host        text   NOT NULL,
    started_at  bigint NOT NULL,
    lease_until bigint NOT NULL,
    started_seq bigint NOT NULL,
    owner       text   NOT NULL,
    PRIMARY KEY (backend, task_id)
);
CREATE SEQUENCE event_seq;
CREATE TABLE events (
    seq     bigint PRIMARY KEY,
    xid     xid8   NOT NULL,
    at      bigint NOT NULL,
    kind    text   NOT NULL,
    backend text   NOT NULL,
    task_id text   NOT NULL,
    event   text   NOT NULL
);
CREATE INDEX events_by_time ON events (at, seq);
CREATE INDEX events_finished ON events (backend, task_id, seq) WHERE kind = 'finished';
CREATE TABLE starts (
    backend    text   NOT NULL,
    started_at bigint NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (backend, started_at, seq)
);
CREATE TABLE attempts (task_id text PRIMARY KEY, attempts text NOT NULL);
CREATE TABLE imported (fingerprint bigint PRIMARY KEY, seq bigint NOT NULL);

-- Sequence numbers for a transaction's events, taken with its transaction
-- id in one critical section: so the order of sequence numbers is the
-- order of transaction ids, and a reader that returns only events of
-- transactions older than every one still running (`events_after`) never
-- returns an event that a later commit could precede. The lock is a
-- session lock held for microseconds, not until commit: admissions on
-- different backends still commit in parallel.
CREATE FUNCTION next_event_seqs(n integer) RETURNS SETOF bigint
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_lock({class}, hashtext('inflight-log:{schema}'));
    BEGIN
        PERFORM pg_current_xact_id();
        RETURN QUERY SELECT nextval('event_seq') FROM generate_series(1, n);
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock({class}, hashtext('inflight-log:{schema}'));
        RAISE;
    END;
    PERFORM pg_advisory_unlock({class}, hashtext('inflight-log:{schema}'));
END
$fn$;

CREATE FUNCTION next_event_seq() RETURNS bigint
LANGUAGE sql AS $fn$ SELECT s FROM next_event_seqs(1) AS s $fn$;

CREATE FUNCTION ms_now(caller bigint) RETURNS bigint
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(caller, floor(extract(epoch FROM now()) * 1000)::bigint)
$fn$;

-- What the cap rule reads for an admission of `p_task` to `p_backend` at
-- `p_at`; window lengths are NULL for caps the backend does not have.
-- `admit_check` calls it under the cap rows' locks; `check_admission`
-- without them.
CREATE FUNCTION admission_counts(
    p_backend text, p_task text, p_at bigint, p_hour_ms bigint, p_day_ms bigint,
    OUT in_flight boolean, OUT open_total bigint, OUT open_backend bigint,
    OUT last_hour bigint, OUT last_day bigint)
LANGUAGE sql STABLE AS $fn$
    SELECT
        EXISTS (SELECT 1 FROM open_slots WHERE backend = p_backend AND task_id = p_task),
        (SELECT count(*) FROM open_slots),
        (SELECT count(*) FROM open_slots WHERE backend = p_backend),
        CASE WHEN p_hour_ms IS NOT NULL THEN
            (SELECT count(*) FROM starts WHERE backend = p_backend AND started_at > p_at - p_hour_ms)
        END,
        CASE WHEN p_day_ms IS NOT NULL THEN
            (SELECT count(*) FROM starts WHERE backend = p_backend AND started_at > p_at - p_day_ms)
        END
$fn$;

-- The reading half of an admission, in one round trip: the key's slot (a
-- retry of the same run gets it back, nothing taken or locked), else the
-- event's sequence number, the cap rows locked in a fixed order (global
-- when there is a global cap, then the backend's), and the counts the cap
-- rule (`ledger_core::admission`, applied by the caller) reads. Window
-- lengths are NULL for caps the backend does not have.
CREATE FUNCTION admit_check(
    p_backend text, p_task text, p_run text, p_global boolean,
    p_hour_ms bigint, p_day_ms bigint, p_now bigint,
    OUT o_run text, OUT o_started_at bigint, OUT o_lease_until bigint,
    OUT o_started_seq bigint, OUT o_owner text,
    OUT o_seq bigint, OUT o_at bigint, OUT o_in_flight boolean,
    OUT o_open_total bigint, OUT o_open_backend bigint,
    OUT o_last_hour bigint, OUT o_last_day bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
    SELECT run_id, started_at, lease_until, started_seq, owner
      INTO o_run, o_started_at, o_lease_until, o_started_seq, o_owner
      FROM open_slots WHERE backend = p_backend AND task_id = p_task;
    IF o_run = p_run THEN
        RETURN;
    END IF;
    -- First, before anything else takes the transaction's id.
    o_seq := next_event_seq();
    o_at := ms_now(p_now);
    IF p_global THEN
        INSERT INTO caps (scope) VALUES ('global') ON CONFLICT DO NOTHING;
        PERFORM 1 FROM caps WHERE scope = 'global' FOR UPDATE;
    END IF;
    INSERT INTO caps (scope) VALUES ('backend:' || p_backend) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM caps WHERE scope = 'backend:' || p_backend FOR UPDATE;
    SELECT * INTO o_in_flight, o_open_total, o_open_backend, o_last_hour, o_last_day
      FROM admission_counts(p_backend, p_task, o_at, p_hour_ms, p_day_ms);
END
$fn$;

-- The reading half of a finish, in one round trip: the slot, checked
-- against the expected run (NULL: any); then the event's sequence number,
-- the slot deleted, and the task's attempts row locked and returned for
-- the caller to update. `o_outcome`: finished, not_in_flight, other_run.
CREATE FUNCTION finish_take(
    p_backend text, p_task text, p_run text, p_now bigint, p_fresh_attempts text,
    OUT o_outcome text, OUT o_run text, OUT o_started_at bigint,
    OUT o_lease_until bigint, OUT o_started_seq bigint, OUT o_owner text,
    OUT o_seq bigint, OUT o_at bigint, OUT o_attempts text)
LANGUAGE plpgsql AS $fn$
BEGIN
    SELECT run_id, started_at, lease_until, started_seq, owner
      INTO o_run, o_started_at, o_lease_until, o_started_seq, o_owner
      FROM open_slots WHERE backend = p_backend AND task_id = p_task;
    IF NOT FOUND THEN
        o_outcome := 'not_in_flight';
        RETURN;
    END IF;
    IF p_run IS NOT NULL AND o_run <> p_run THEN
        o_outcome := 'other_run';
        RETURN;
    END IF;
    o_seq := next_event_seq();
    o_at := ms_now(p_now);
    -- Conditional on the run read above: one that finished or re-admitted
    -- the key since wins, and this one changes nothing.
    DELETE FROM open_slots WHERE backend = p_backend AND task_id = p_task AND run_id = o_run;
    IF NOT FOUND THEN
        o_outcome := 'not_in_flight';
        RETURN;
    END IF;
    INSERT INTO attempts (task_id, attempts) VALUES (p_task, p_fresh_attempts)
        ON CONFLICT DO NOTHING;
    SELECT attempts INTO o_attempts FROM attempts WHERE task_id = p_task FOR UPDATE;
    o_outcome := 'finished';
END
$fn$;
"#,
        class = LOCK_CLASS,
    )
}

/// Version 2: the functions an admission and a finish call on every
/// cycle, in PL/pgSQL. PostgreSQL (before 18) plans a SQL-language
/// function's body afresh at every call that it cannot inline, and these
/// cannot be inlined; PL/pgSQL keeps each statement's plan for the
/// session (and keeps generic ones: see [`function_settings`]). Measured on the benchmark's server with
/// 500,000 old starts: the counts 240 µs a call as SQL, 190 µs as PL/pgSQL
/// planned afresh, 95 µs with the plans kept; a sequence number 95 µs
/// through the SQL wrapper, 63 µs without it. What they return is
/// unchanged.
fn v2() -> &'static str {
    r#"
CREATE OR REPLACE FUNCTION next_event_seq() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    s bigint;
BEGIN
    SELECT n INTO s FROM next_event_seqs(1) AS n;
    RETURN s;
END
$fn$;

CREATE OR REPLACE FUNCTION admission_counts(
    p_backend text, p_task text, p_at bigint, p_hour_ms bigint, p_day_ms bigint,
    OUT in_flight boolean, OUT open_total bigint, OUT open_backend bigint,
    OUT last_hour bigint, OUT last_day bigint)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    in_flight := EXISTS (SELECT 1 FROM open_slots WHERE backend = p_backend AND task_id = p_task);
    SELECT count(*) INTO open_total FROM open_slots;
    SELECT count(*) INTO open_backend FROM open_slots WHERE backend = p_backend;
    IF p_hour_ms IS NOT NULL THEN
        SELECT count(*) INTO last_hour FROM starts
         WHERE backend = p_backend AND started_at > p_at - p_hour_ms;
    END IF;
    IF p_day_ms IS NOT NULL THEN
        SELECT count(*) INTO last_day FROM starts
         WHERE backend = p_backend AND started_at > p_at - p_day_ms;
    END IF;
END
$fn$;
"#
}

/// Version 3: Plane's request budgets, shared by every host. A budget row
/// per key fingerprint (its pause, and the lock its takes serialise on),
/// and one row per take still in the window. `budget_read` is a take's
/// reading half, in one round trip: the row locked, the takes that left
/// the window dropped, the rest returned with the database's now; the
/// caller applies `ledger_core::budget` and records the take. A lost take
/// costs nothing but a request's worth of budget, so these transactions
/// do not wait for their commit to be flushed.
fn v3() -> &'static str {
    r#"
CREATE TABLE budgets (key text PRIMARY KEY, paused_until bigint);
CREATE TABLE budget_takes (
    key      text   NOT NULL,
    taken_at bigint NOT NULL,
    id       bigserial,
    PRIMARY KEY (key, taken_at, id)
);

CREATE FUNCTION budget_read(
    p_key text, p_window_ms bigint, p_now bigint,
    OUT o_at bigint, OUT o_paused_until bigint, OUT o_takes bigint[])
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    o_at := ms_now(p_now);
    INSERT INTO budgets (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    SELECT paused_until INTO o_paused_until FROM budgets WHERE key = p_key FOR UPDATE;
    DELETE FROM budget_takes WHERE key = p_key AND taken_at <= o_at - p_window_ms;
    SELECT coalesce(array_agg(taken_at ORDER BY taken_at), '{}') INTO o_takes
      FROM budget_takes WHERE key = p_key;
END
$fn$;
"#
}

/// Version 4: shared board snapshots and their webhook hints. Neither is
/// a record of anything (a lost listing or hint costs a Plane request), so
/// their commits are not waited on for the flush.
fn v4() -> &'static str {
    r#"
CREATE TABLE boards (
    key           text   PRIMARY KEY,
    listed_at     bigint,
    events_seen   bigint NOT NULL DEFAULT 0,
    listing_until bigint,
    last_hint     bigint NOT NULL DEFAULT 0,
    body          bytea
);
CREATE TABLE board_hints (
    key  text   NOT NULL,
    seq  bigint NOT NULL,
    at   bigint NOT NULL,
    hint bytea  NOT NULL,
    PRIMARY KEY (key, seq)
);

-- A look at board `p_key`, its row locked until the caller's commit (the
-- caller applies ledger_core::board_rule and may claim the listing).
CREATE FUNCTION board_read(
    p_key text, p_now bigint,
    OUT o_at bigint, OUT o_listed_at bigint, OUT o_events_seen bigint,
    OUT o_listing_until bigint, OUT o_body bytea, OUT o_newest_event bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    o_at := ms_now(p_now);
    INSERT INTO boards (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    SELECT listed_at, events_seen, listing_until, body
      INTO o_listed_at, o_events_seen, o_listing_until, o_body
      FROM boards WHERE key = p_key FOR UPDATE;
    SELECT coalesce(max(seq), 0) INTO o_newest_event FROM events;
END
$fn$;

-- Numbered under the board row's lock, so hints commit in their numbers'
-- order and a reader asking from its last number misses none.
CREATE FUNCTION board_hint_add(p_key text, p_hint bytea, p_now bigint, p_keep_ms bigint)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_at  bigint := ms_now(p_now);
    v_seq bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO boards (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    UPDATE boards SET last_hint = last_hint + 1 WHERE key = p_key RETURNING last_hint INTO v_seq;
    DELETE FROM board_hints WHERE key = p_key AND at <= v_at - p_keep_ms;
    INSERT INTO board_hints (key, seq, at, hint) VALUES (p_key, v_seq, v_at, p_hint);
    RETURN v_seq;
END
$fn$;
"#
}

/// What this build adds to a version-4 schema without changing its
/// version: additions older builds of the same version neither call nor
/// mind, so hosts can be upgraded one at a time. `meta`'s `additions` key
/// says how many of the steps below a schema has had; an open that finds
/// the version and the additions current reads one row and is done.
pub(crate) const ADDITIONS: u64 = 1;

/// Addition 1: an admission and a finish in one round trip each.
///
/// - Each backend's open slots are counted by a trigger on `open_slots`,
///   in the writing transaction, whoever writes (an older build's
///   admission, an import, a finish): its cap row (`caps.open` of
///   `backend:NAME`) counts the slots opened, a row of its own
///   (`closed:NAME`, negative) those closed, and their sum is the slots
///   open. An admission reads the first under the lock it takes anyway
///   and the second without a lock (a close committing meanwhile is
///   missed: the count is higher, never lower), so finishes and
///   admissions do not queue behind one another's commits; and neither
///   steps over the dead versions of `open_slots` rows (one per finished
///   slot, until a vacuum) that counting the rows would, by the thousand
///   under churn. The global count is the sum over every backend's rows,
///   read under the global row's lock, which every globally capped
///   admission takes. The cap rows are updated in place (HOT, `fillfactor`
///   leaving room), so their dead versions are pruned as the page is
///   read.
/// - `admission_rule` is `ledger_core::admission` in SQL (a property test
///   runs both over random counts and limits and demands the same answer).
/// - `admit_one`, `finish_one` and `budget_take` read, decide and write
///   in one call,
///   committed by the call's own implicit transaction: the caller's round
///   trip is the whole admission or finish. The event's JSON comes from
///   the caller without the fields only the database knows (`seq`, `at`;
///   a denial; a finish's run, start and role), which the function adds;
///   a finish adds one to the attempts counter the caller names
///   (`FinishReason::attempts_counter`).
///
/// Written to run again over itself (a schema whose marker was lost gets
/// the same result), as every addition must.
fn addition_1() -> &'static str {
    r#"
ALTER TABLE caps ADD COLUMN IF NOT EXISTS open bigint NOT NULL DEFAULT 0;
ALTER TABLE caps SET (fillfactor = 20);
INSERT INTO caps (scope) SELECT DISTINCT 'backend:' || backend FROM open_slots
    ON CONFLICT DO NOTHING;
UPDATE caps SET open = counted.n
  FROM (SELECT 'backend:' || backend AS scope, count(*) AS n FROM open_slots GROUP BY backend) AS counted
 WHERE caps.scope = counted.scope;

CREATE OR REPLACE FUNCTION count_open_slots() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE caps SET open = open + 1 WHERE scope = 'backend:' || NEW.backend;
        IF NOT FOUND THEN
            INSERT INTO caps AS c (scope, open) VALUES ('backend:' || NEW.backend, 1)
                ON CONFLICT (scope) DO UPDATE SET open = c.open + 1;
        END IF;
    ELSE
        -- On a row of its own: a finish does not wait for an admission's
        -- lock on the backend's row, nor an admission for a finish's.
        UPDATE caps SET open = open - 1 WHERE scope = 'closed:' || OLD.backend;
        IF NOT FOUND THEN
            INSERT INTO caps AS c (scope, open) VALUES ('closed:' || OLD.backend, -1)
                ON CONFLICT (scope) DO UPDATE SET open = c.open - 1;
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS count_open_slots ON open_slots;
CREATE TRIGGER count_open_slots AFTER INSERT OR DELETE ON open_slots
    FOR EACH ROW EXECUTE FUNCTION count_open_slots();

CREATE OR REPLACE FUNCTION admission_rule(
    p_in_flight boolean, p_open_total bigint, p_open_backend bigint,
    p_last_hour bigint, p_last_day bigint,
    p_global_max bigint, p_backend_max bigint, p_per_hour bigint, p_per_day bigint)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_in_flight THEN
        RETURN jsonb_build_object('reason', 'already_in_flight', 'window', NULL,
                                  'current', 1, 'limit', 1);
    END IF;
    IF p_global_max IS NOT NULL AND p_open_total >= p_global_max THEN
        RETURN jsonb_build_object('reason', 'global_concurrency_exceeded', 'window', NULL,
                                  'current', LEAST(p_open_total, 4294967295), 'limit', p_global_max);
    END IF;
    IF p_open_backend >= p_backend_max THEN
        RETURN jsonb_build_object('reason', 'backend_concurrency_exceeded', 'window', NULL,
                                  'current', LEAST(p_open_backend, 4294967295), 'limit', p_backend_max);
    END IF;
    IF p_per_hour IS NOT NULL AND p_last_hour IS NOT NULL AND p_last_hour >= p_per_hour THEN
        RETURN jsonb_build_object('reason', 'backend_rate_exceeded', 'window', 'hourly',
                                  'current', LEAST(p_last_hour, 4294967295), 'limit', p_per_hour);
    END IF;
    IF p_per_day IS NOT NULL AND p_last_day IS NOT NULL AND p_last_day >= p_per_day THEN
        RETURN jsonb_build_object('reason', 'backend_rate_exceeded', 'window', 'daily',
                                  'current', LEAST(p_last_day, 4294967295), 'limit', p_per_day);
    END IF;
    RETURN NULL;
END
$fn$;

-- An admission, whole: the event's sequence number first; when the cap
-- rows are held by another admission, a denial by a look without locks;
-- else the cap rows locked in a fixed order (global
-- when capped, then the backend's), the key's slot and the counts read
-- under those locks; the key's slot of the same run (a retry whose commit
-- landed) is returned untouched, else the rule applied and the start or
-- the denial written. `o_denial` is set for a denial.
CREATE OR REPLACE FUNCTION admit_one(
    p_backend text, p_task text, p_run text, p_host text, p_owner text, p_lease_ms bigint,
    p_global_max bigint, p_backend_max bigint, p_per_hour bigint, p_per_day bigint,
    p_now bigint, p_started text, p_denied text,
    OUT o_run text, OUT o_started_at bigint, OUT o_lease_until bigint,
    OUT o_started_seq bigint, OUT o_owner text, OUT o_denial text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_seq bigint;
    v_at bigint;
    v_in_flight boolean;
    v_total bigint;
    v_backend bigint;
    v_hour bigint;
    v_day bigint;
    v_denial jsonb;
BEGIN
    -- First, before anything else takes the transaction's id.
    v_seq := next_event_seq();
    v_at := ms_now(p_now);
    -- The first cap row this admission must lock (the global one under a
    -- global cap), taken if no other admission holds it.
    IF p_global_max IS NOT NULL THEN
        PERFORM 1 FROM caps WHERE scope = 'global' FOR UPDATE SKIP LOCKED;
    ELSE
        PERFORM 1 FROM caps WHERE scope = 'backend:' || p_backend FOR UPDATE SKIP LOCKED;
    END IF;
    IF NOT FOUND THEN
        -- Held by another (or not made yet): a first look without the
        -- locks. A cap full now is full for this admission too: these
        -- counts can only be older than what the locks would show, higher
        -- only by slots closed since (a denial a retry would not meet),
        -- never lower by slots opened since. So a denial by the key or a
        -- concurrency cap waits on no other admission, and at a full cap
        -- the many askers do not queue behind one another's commits. An
        -- admission is decided again under the locks.
        SELECT run_id, started_at, lease_until, started_seq, owner
          INTO o_run, o_started_at, o_lease_until, o_started_seq, o_owner
          FROM open_slots WHERE backend = p_backend AND task_id = p_task;
        IF o_run = p_run THEN
            RETURN;
        END IF;
        v_in_flight := FOUND;
        SELECT coalesce(sum(open), 0) INTO v_backend FROM caps
         WHERE scope IN ('backend:' || p_backend, 'closed:' || p_backend);
        IF p_global_max IS NOT NULL THEN
            SELECT coalesce(sum(open), 0) INTO v_total FROM caps
             WHERE scope LIKE 'backend:%' OR scope LIKE 'closed:%';
        END IF;
        v_denial := admission_rule(v_in_flight, v_total, v_backend, NULL, NULL,
                                   p_global_max, p_backend_max, NULL, NULL);
    END IF;
    IF v_denial IS NULL THEN
        IF p_global_max IS NOT NULL THEN
            PERFORM 1 FROM caps WHERE scope = 'global' FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO caps (scope) VALUES ('global') ON CONFLICT DO NOTHING;
                PERFORM 1 FROM caps WHERE scope = 'global' FOR UPDATE;
            END IF;
        END IF;
        SELECT open INTO v_backend FROM caps WHERE scope = 'backend:' || p_backend FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO caps (scope) VALUES ('backend:' || p_backend) ON CONFLICT DO NOTHING;
            SELECT open INTO v_backend FROM caps WHERE scope = 'backend:' || p_backend FOR UPDATE;
        END IF;
        -- The closes, read without their row's lock: one committing now
        -- is missed, and the count is higher than it is, never lower.
        v_backend := v_backend + coalesce(
            (SELECT open FROM caps WHERE scope = 'closed:' || p_backend), 0);
        -- The key's slot, read under the locks (another run's admission of
        -- the key may have committed while this one waited).
        SELECT run_id, started_at, lease_until, started_seq, owner
          INTO o_run, o_started_at, o_lease_until, o_started_seq, o_owner
          FROM open_slots WHERE backend = p_backend AND task_id = p_task;
        IF o_run = p_run THEN
            RETURN;
        END IF;
        v_in_flight := FOUND;
        IF p_global_max IS NOT NULL THEN
            SELECT coalesce(sum(open), 0) INTO v_total FROM caps
             WHERE scope LIKE 'backend:%' OR scope LIKE 'closed:%';
        END IF;
        IF p_per_hour IS NOT NULL THEN
            SELECT count(*) INTO v_hour FROM starts
             WHERE backend = p_backend AND started_at > v_at - 3600000;
        END IF;
        IF p_per_day IS NOT NULL THEN
            SELECT count(*) INTO v_day FROM starts
             WHERE backend = p_backend AND started_at > v_at - 86400000;
        END IF;
        v_denial := admission_rule(v_in_flight, v_total, v_backend, v_hour, v_day,
                                   p_global_max, p_backend_max, p_per_hour, p_per_day);
    END IF;
    IF v_denial IS NOT NULL THEN
        o_run := NULL;
        o_denial := v_denial::text;
        INSERT INTO events (seq, xid, at, kind, backend, task_id, event)
        VALUES (v_seq, pg_current_xact_id(), v_at, 'denied', p_backend, p_task,
                (p_denied::jsonb || jsonb_build_object('seq', v_seq, 'at', v_at, 'denial', v_denial))::text);
        RETURN;
    END IF;
    o_run := p_run;
    o_started_at := v_at;
    o_lease_until := CASE WHEN p_lease_ms > 9223372036854775807 - v_at
                          THEN 9223372036854775807 ELSE v_at + p_lease_ms END;
    o_started_seq := v_seq;
    o_owner := p_owner;
    INSERT INTO open_slots (backend, task_id, run_id, host, started_at, lease_until, started_seq, owner)
    VALUES (p_backend, p_task, p_run, p_host, v_at, o_lease_until, v_seq, p_owner);
    INSERT INTO starts (backend, started_at, seq) VALUES (p_backend, v_at, v_seq);
    INSERT INTO events (seq, xid, at, kind, backend, task_id, event)
    VALUES (v_seq, pg_current_xact_id(), v_at, 'started', p_backend, p_task,
            (p_started::jsonb || jsonb_build_object('seq', v_seq, 'at', v_at))::text);
END
$fn$;

-- Each key's takes are counted in its budget row (`held`), by statement
-- triggers on `budget_takes` (whoever inserts or deletes them), so that a
-- take reads one row instead of every take in the window: at a fleet's
-- pace the window holds thousands, and every take of the key waits on its
-- row's lock.
ALTER TABLE budgets ADD COLUMN IF NOT EXISTS held bigint NOT NULL DEFAULT 0;
UPDATE budgets SET held = counted.n
  FROM (SELECT key, count(*) AS n FROM budget_takes GROUP BY key) AS counted
 WHERE budgets.key = counted.key;
CREATE OR REPLACE FUNCTION count_budget_takes() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE budgets b SET held = b.held + n.c
          FROM (SELECT key, count(*) AS c FROM added GROUP BY key) AS n WHERE b.key = n.key;
    ELSE
        UPDATE budgets b SET held = b.held - n.c
          FROM (SELECT key, count(*) AS c FROM removed GROUP BY key) AS n WHERE b.key = n.key;
    END IF;
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS count_budget_takes_added ON budget_takes;
CREATE TRIGGER count_budget_takes_added AFTER INSERT ON budget_takes
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION count_budget_takes();
DROP TRIGGER IF EXISTS count_budget_takes_removed ON budget_takes;
CREATE TRIGGER count_budget_takes_removed AFTER DELETE ON budget_takes
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION count_budget_takes();

-- A take of a Plane key's budget, whole, in one round trip: the key's row
-- locked, the takes that left the window dropped, and what
-- `ledger_core::budget_counted` reads: how many are in the window and,
-- when that is the limit or more, the take whose leaving makes room
-- (`o_leaving`). The take is recorded when the key is not paused and the
-- window has room (the two conditions under which the rule answers
-- Taken; the caller applies the rule to the same figures and checks
-- they agree). A lost take costs a request's worth of budget: the commit
-- is not waited on for the flush.
CREATE OR REPLACE FUNCTION budget_take(
    p_key text, p_window_ms bigint, p_now bigint, p_limit bigint,
    OUT o_at bigint, OUT o_paused_until bigint, OUT o_in_window bigint,
    OUT o_leaving bigint, OUT o_taken boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_gone bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    o_at := ms_now(p_now);
    SELECT paused_until, held INTO o_paused_until, o_in_window
      FROM budgets WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO budgets (key) VALUES (p_key) ON CONFLICT DO NOTHING;
        SELECT paused_until, held INTO o_paused_until, o_in_window
          FROM budgets WHERE key = p_key FOR UPDATE;
    END IF;
    DELETE FROM budget_takes WHERE key = p_key AND taken_at <= o_at - p_window_ms;
    GET DIAGNOSTICS v_gone = ROW_COUNT;
    o_in_window := o_in_window - v_gone;
    IF o_in_window >= p_limit THEN
        SELECT taken_at INTO o_leaving FROM budget_takes WHERE key = p_key
         ORDER BY taken_at, id OFFSET o_in_window - p_limit LIMIT 1;
    END IF;
    o_taken := (o_paused_until IS NULL OR o_paused_until <= o_at) AND o_in_window < p_limit;
    IF o_taken THEN
        INSERT INTO budget_takes (key, taken_at) VALUES (p_key, o_at);
    END IF;
END
$fn$;

-- A finish, whole: the slot checked against the expected run (NULL: any),
-- deleted, its event written and the task's attempts counted.
-- `o_outcome`: finished, not_in_flight, other_run (`o_run` the open one).
CREATE OR REPLACE FUNCTION finish_one(
    p_backend text, p_task text, p_run text, p_now bigint, p_finished text,
    p_counter text, p_fresh_attempts text,
    OUT o_outcome text, OUT o_run text, OUT o_started_at bigint,
    OUT o_lease_until bigint, OUT o_started_seq bigint, OUT o_owner text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_seq bigint;
    v_at bigint;
    v_attempts text;
    v_event jsonb;
BEGIN
    -- The reading half is the older builds' own: the slot checked, the
    -- sequence number taken, the slot deleted, the attempts row locked.
    SELECT * INTO o_outcome, o_run, o_started_at, o_lease_until, o_started_seq, o_owner,
                  v_seq, v_at, v_attempts
      FROM finish_take(p_backend, p_task, p_run, p_now, p_fresh_attempts);
    IF o_outcome <> 'finished' THEN
        RETURN;
    END IF;
    v_event := p_finished::jsonb || jsonb_build_object(
        'seq', v_seq, 'at', v_at, 'run_id', o_run, 'started_at', o_started_at);
    IF jsonb_typeof(o_owner::jsonb -> 'role') = 'string' THEN
        v_event := v_event || jsonb_build_object('role', o_owner::jsonb -> 'role');
    END IF;
    INSERT INTO events (seq, xid, at, kind, backend, task_id, event)
    VALUES (v_seq, pg_current_xact_id(), v_at, 'finished', p_backend, p_task, v_event::text);
    UPDATE attempts SET attempts = jsonb_set(
        v_attempts::jsonb, ARRAY[p_counter],
        to_jsonb(coalesce((v_attempts::jsonb ->> p_counter)::bigint, 0) + 1))::text
     WHERE task_id = p_task;
END
$fn$;
"#
}

/// Creates the schema and its tables if they are missing, or checks their
/// version: a newer one is refused untouched, an older one migrated. Runs
/// under a transaction-scoped advisory lock, so hosts starting together
/// create it once.
pub(crate) fn prepare(connection: &mut Connection, schema: &str) -> Result<()> {
    // Every keeper opens the store at its start: one row read when the
    // schema is current, the migration's transaction only when it is not.
    if current(connection, schema) {
        return Ok(());
    }
    let migrated = {
        let client = connection.client()?;
        migrate(client, schema)
    };
    let (found, version) = migrated.map_err(|e| connection.error(&e))?;
    if let Some(found) = found
        && found < version
    {
        tracing::info!(
            location = connection.location(),
            from = found,
            to = version,
            "migrated the ledger's schema"
        );
    }
    if version > VERSION {
        return Err(LedgerError::NewerDatabaseSchema {
            location: connection.location().to_owned(),
            found: version,
            supported: VERSION,
        });
    }
    Ok(())
}

/// Whether `schema` is at this build's version with all its additions,
/// read in one round trip. Anything else (no schema yet, an older or newer
/// one, an error) is for [`migrate`] to settle and report.
fn current(connection: &mut Connection, schema: &str) -> bool {
    let Ok(client) = connection.client() else {
        return false;
    };
    let read = client.query_typed_one(
        &format!(
            "SELECT (SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'), \
                    (SELECT value FROM \"{schema}\".meta WHERE key = 'additions')"
        ),
        &[],
    );
    let Ok(row) = read else {
        return false;
    };
    let number = |i: usize| {
        row.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
    };
    number(0) == Some(VERSION) && number(1).is_some_and(|n| n >= ADDITIONS)
}

/// What each of the schema's functions runs with, set on the function
/// rather than the session, so that no session setting is needed and a
/// pooler may hand each transaction to any server connection:
///
/// - `search_path`: the schema (the functions name their tables
///   unqualified; the store's own statements name the schema);
/// - for the PL/pgSQL ones, `plan_cache_mode = force_generic_plan`: every
///   statement in them is short and keyed by an index, so its generic plan
///   is the right one; left to choose, the planner plans the rate windows'
///   counts afresh at every call (their generic estimate is pessimistic),
///   and planning them costs more than running them; and
///   `max_parallel_workers_per_gather = 0`: a generic plan over a long
///   history would start workers for a count of a few rows.
///
/// `ms_now`, which reads no table and is called everywhere, keeps none.
/// The statement sets what a function lacks, once.
fn function_settings(schema: &str) -> String {
    format!(
        r#"
DO $do$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS sig, l.lanname AS lang, coalesce(p.proconfig, '{{}}') AS conf
          FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_language l ON l.oid = p.prolang
         WHERE n.nspname = '{schema}' AND p.proname <> 'ms_now'
    LOOP
        IF NOT EXISTS (SELECT 1 FROM unnest(f.conf) c WHERE c LIKE 'search_path=%') THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.sig, '{schema}');
        END IF;
        IF f.lang = 'plpgsql'
           AND NOT EXISTS (SELECT 1 FROM unnest(f.conf) c WHERE c LIKE 'plan_cache_mode=%') THEN
            EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan', f.sig);
            EXECUTE format('ALTER FUNCTION %s SET max_parallel_workers_per_gather = 0', f.sig);
        END IF;
    END LOOP;
END
$do$;
"#
    )
}

/// Checks, without changing anything, that `schema` holds a ledger at this
/// build's version: for read-only inspection.
pub(crate) fn check(connection: &mut Connection, schema: &str) -> Result<()> {
    let found = {
        let client = connection.client()?;
        client
            .query_typed_opt(
                &format!("SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'"),
                &[],
            )
            .map(|row| row.map(|row| row.get::<_, String>(0).parse().unwrap_or(u64::MAX)))
    };
    let missing = |why: String| LedgerError::Database {
        location: connection.location().to_owned(),
        source: why.into(),
    };
    match found {
        // No `meta` table in the schema (or no schema): no ledger there.
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => Err(missing(
            format!("no inflight ledger in schema {schema:?}: nothing to inspect"),
        )),
        Err(e) => Err(connection.error(&e)),
        Ok(None) => Err(missing(format!(
            "schema {schema:?} has no ledger version: nothing to inspect"
        ))),
        Ok(Some(version)) if version > VERSION => Err(LedgerError::NewerDatabaseSchema {
            location: connection.location().to_owned(),
            found: version,
            supported: VERSION,
        }),
        Ok(Some(version)) if version < VERSION => Err(missing(format!(
            "the ledger's schema is at version {version}, older than this build's {VERSION}: \
             start a runner or the watchdog once to migrate it"
        ))),
        Ok(Some(_)) => Ok(()),
    }
}

/// The schema's version after creating it if it was missing, or migrating
/// it from an older version. A fresh schema is created by the same steps
/// an old one is migrated by (version 1, then each later one), so the two
/// cannot differ. Returns the version found (`None`: none, the schema was
/// created) and the version now.
fn migrate(
    client: &mut postgres::Client,
    schema: &str,
) -> std::result::Result<(Option<u64>, u64), postgres::Error> {
    let mut tx = client.transaction()?;
    // Every statement here is sent unnamed (typed), as the store's are: a
    // named one would stay on a pooled server connection for the next
    // client to meet.
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[
            (&LOCK_CLASS, Type::INT4),
            (&format!("inflight-migrate:{schema}"), Type::TEXT),
        ],
    )?;
    // The IF NOT EXISTS below answer every open of an existing schema with
    // "already exists, skipping" notices, which the client logs: not an
    // operator's business. Warnings and errors still come through.
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages TO warning;
         CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);"
    ))?;
    // Unreadable is taken for newer: refused, never overwritten.
    let found = tx
        .query_typed_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
        .map(|row| row.get::<_, String>(0).parse().unwrap_or(u64::MAX));
    let mut version = match found {
        None => {
            tx.batch_execute(&v1(schema))?;
            tx.execute_typed(
                "INSERT INTO meta (key, value) VALUES ('schema_version', '1'), ('format', 'inflight-ledger')",
                &[],
            )?;
            1
        }
        Some(version) => version,
    };
    if version == 1 {
        tx.batch_execute(v2())?;
        version = 2;
    }
    if version == 2 {
        tx.batch_execute(v3())?;
        version = 3;
    }
    if version == 3 {
        tx.batch_execute(v4())?;
        version = 4;
    }
    // The start-up sweep's lease (`startup_lock`): a table older builds
    // of the same version neither need nor mind, so no version change.
    // (They hold a session lock instead: during an upgrade an old and a
    // new host may sweep at once, which costs a repeated look, never a
    // second reclaim: each is a conditional finish.)
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sweep_leases \
         (purpose text PRIMARY KEY, holder text NOT NULL, until bigint NOT NULL)",
    )?;
    // A task's history (`task_events`): an index that older builds of the
    // same schema version neither need nor mind, so it comes without a
    // version change. Looked up first: creating it, even `IF NOT EXISTS`,
    // locks the events against writes.
    let indexed = tx.query_typed_opt(
        "SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND indexname = 'events_by_task'",
        &[(&schema, Type::TEXT)],
    )?;
    if indexed.is_none() {
        tx.batch_execute("CREATE INDEX events_by_task ON events (task_id, seq)")?;
    }
    let added = tx
        .query_typed_opt("SELECT value FROM meta WHERE key = 'additions'", &[])?
        .map_or(0, |row| row.get::<_, String>(0).parse().unwrap_or(u64::MAX));
    if added < 1 {
        tx.batch_execute(addition_1())?;
    }
    if added < ADDITIONS {
        tx.execute_typed(
            "INSERT INTO meta (key, value) VALUES ('additions', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[(&ADDITIONS.to_string(), Type::TEXT)],
        )?;
    }
    // Each function carries its settings (see function_settings), set
    // once, on the functions that lack them.
    tx.batch_execute(&function_settings(schema))?;
    if found != Some(version) {
        tx.execute_typed(
            "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
            &[(&version.to_string(), Type::TEXT)],
        )?;
    }
    tx.commit()?;
    Ok((found, version))
}
