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

/// Creates the schema and its tables if they are missing, or checks their
/// version: a newer one is refused untouched, an older one migrated. Runs
/// under a transaction-scoped advisory lock, so hosts starting together
/// create it once.
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

pub(crate) fn prepare(connection: &mut Connection, schema: &str) -> Result<()> {
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
    // Each function carries its settings (see function_settings), set
    // once, on the functions that lack them.
    tx.batch_execute(&function_settings(schema))?;
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
    if found != Some(version) {
        tx.execute_typed(
            "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
            &[(&version.to_string(), Type::TEXT)],
        )?;
    }
    tx.commit()?;
    Ok((found, version))
}
