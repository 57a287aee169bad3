//! What the PostgreSQL store promises beyond the contract: one cap for
//! every process sharing a schema, a log a follower reads without a miss,
//! the database's clock, a refused newer schema, a start-up lock across
//! connections, and a password that never shows.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ledger_core::FleetStore;
use ledger_core::conformance::{T0, admitted, denied, key, limits, request};
use ledger_core::{
    AdmitOutcome, Clock, FinishReason, LedgerError, LedgerStore, SystemClock, Timestamp,
};
use ledger_postgres::{PgLedger, PgOptions};

use crate::support::{bouncer, fresh_options, server};

fn open(options: &PgOptions) -> PgLedger {
    PgLedger::open(options.clone()).unwrap_or_else(|e| panic!("{e}"))
}

/// Eight threads on two stores (two connections, as two hosts would have)
/// race for one backend capped at 2: the open slots never exceed it, and
/// the count is taken outside the ledger.
#[test]
fn stores_sharing_a_schema_share_one_cap() {
    let options = fresh_options();
    let stores = [Arc::new(open(&options)), Arc::new(open(&options))];
    let running = Arc::new(AtomicI64::new(0));
    let most = Arc::new(AtomicI64::new(0));
    let admitted_total = Arc::new(AtomicI64::new(0));
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = stores[t % 2].clone();
            let (running, most, total, start) = (
                running.clone(),
                most.clone(),
                admitted_total.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                for i in 0..25 {
                    let task = format!("T{t}-{i}");
                    let req = request("shared", &task, &format!("r{t}-{i}"));
                    let now = SystemClock.now();
                    if let AdmitOutcome::Admitted(slot) =
                        store.admit(&req, &limits(2), now).unwrap()
                    {
                        let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now_running, Ordering::SeqCst);
                        total.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        running.fetch_sub(1, Ordering::SeqCst);
                        store
                            .finish(&slot.key, Some(&slot.run_id), FinishReason::Completed, now)
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= 2, "the cap was exceeded");
    assert!(admitted_total.load(Ordering::SeqCst) > 0);
    assert!(stores[0].open_slots().unwrap().is_empty());
}

/// Writers on four backends commit in parallel while a follower reads the
/// log with `events_after`: it sees every event, each once, in order.
#[test]
fn a_follower_misses_no_event_while_writers_race() {
    let options = fresh_options();
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = open(&options);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let req = request(&format!("b{w}"), &format!("T{i}"), &format!("r{w}-{i}"));
                    let slot = admitted(store.admit(&req, &limits(5), SystemClock.now()).unwrap());
                    store
                        .finish(
                            &slot.key,
                            Some(&slot.run_id),
                            FinishReason::Completed,
                            SystemClock.now(),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    let follower = {
        let store = open(&options);
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let after = seen.last().copied().unwrap_or(0);
                let batch = store.events_after(after, 7).unwrap();
                let empty = batch.is_empty();
                seen.extend(batch.into_iter().map(|e| e.seq));
                if finished && empty {
                    return seen;
                }
            }
        })
    };
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = follower.join().unwrap();
    let all: Vec<u64> = open(&options)
        .events_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(all.len(), 4 * 40 * 2);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
    let missed: BTreeSet<_> = all.iter().filter(|s| !seen.contains(s)).collect();
    assert!(missed.is_empty(), "the follower missed {missed:?}");
}

/// With the database's clock, a caller whose clock is far off changes
/// nothing: the slot's times are the database's.
#[test]
fn the_database_clock_wins_over_the_callers() {
    let store = open(&fresh_options());
    let ten_minutes_ahead = SystemClock.now().saturating_add(Duration::from_secs(600));
    let before = SystemClock.now();
    let slot = admitted(
        store
            .admit(&request("b", "T", "r"), &limits(1), ten_minutes_ahead)
            .unwrap(),
    );
    let after = SystemClock.now();
    // The server runs on this machine: its clock is this one's.
    let slack = Duration::from_secs(2);
    assert!(
        slot.started_at >= before.saturating_sub(slack),
        "{}",
        slot.started_at
    );
    assert!(
        slot.started_at <= after.saturating_add(slack),
        "{}",
        slot.started_at
    );
    assert_eq!(
        slot.lease_until.duration_since(slot.started_at),
        Duration::from_secs(60)
    );
    // A renewal from the skewed clock lasts its length from the database's
    // now: it cannot reach into the caller's future.
    store
        .renew_lease(
            &slot.key,
            &slot.run_id,
            Duration::from_secs(90),
            ten_minutes_ahead,
        )
        .unwrap();
    let renewed = store.slot(&slot.key).unwrap().unwrap();
    assert!(
        renewed.lease_until
            <= SystemClock
                .now()
                .saturating_add(Duration::from_secs(90) + slack),
        "the lease reaches {}",
        renewed.lease_until
    );
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let options = fresh_options();
    drop(open(&options));
    let mut client = postgres::Client::connect(&server().url("inflight"), postgres::NoTls).unwrap();
    let meta = format!("{}.meta", options.schema);
    client
        .execute(
            &format!("UPDATE {meta} SET value = '99' WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap();
    match PgLedger::open(options.clone()) {
        Err(LedgerError::NewerDatabaseSchema {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (99, 4));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let row = client
        .query_one(
            &format!("SELECT value FROM {meta} WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "99");
}

/// A schema left at version 1 (its hot functions in SQL, which PostgreSQL
/// plans afresh at every call; no Plane budgets) is migrated to the
/// current version when a store opens it, and the ledger in it carries on.
#[test]
fn an_older_schema_is_migrated_and_keeps_its_ledger() {
    let options = fresh_options();
    let store = open(&options);
    let now = SystemClock.now();
    admitted(
        store
            .admit(&request("local", "T-1", "r1"), &limits(2), now)
            .unwrap(),
    );
    drop(store);
    let mut client = postgres::Client::connect(&server().url("inflight"), postgres::NoTls).unwrap();
    let schema = &options.schema;
    client
        .batch_execute(&format!(
            "SET search_path TO {schema};
             UPDATE meta SET value = '1' WHERE key = 'schema_version';
             DELETE FROM meta WHERE key = 'additions';
             CREATE OR REPLACE FUNCTION next_event_seq() RETURNS bigint
               LANGUAGE sql AS 'SELECT s FROM next_event_seqs(1) AS s';
             DROP FUNCTION budget_read, board_read, board_hint_add;
             DROP TABLE budgets, budget_takes, boards, board_hints;"
        ))
        .unwrap();
    let languages = |client: &mut postgres::Client| -> Vec<String> {
        client
            .query(
                "SELECT p.proname || ' ' || l.lanname FROM pg_proc p
                   JOIN pg_language l ON l.oid = p.prolang
                   JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = $1 AND p.proname IN ('next_event_seq', 'admission_counts')
                  ORDER BY 1",
                &[schema],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    assert_eq!(
        languages(&mut client),
        ["admission_counts plpgsql", "next_event_seq sql"]
    );

    let store = open(&options);
    assert_eq!(
        languages(&mut client),
        ["admission_counts plpgsql", "next_event_seq plpgsql"]
    );
    let row = client
        .query_one(
            &format!("SELECT value FROM {schema}.meta WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "4");
    assert_eq!(
        store
            .take_budget("key", 1, Duration::from_secs(60), now)
            .unwrap(),
        ledger_core::BudgetAnswer::Taken { in_window: 1 }
    );
    assert!(store.add_board_hint("board", b"hint", now).unwrap() > 0);
    // The slot admitted before the migration is still open and still
    // counted; the next event follows the last one.
    assert_eq!(store.open_slots().unwrap().len(), 1);
    let second = admitted(
        store
            .admit(&request("local", "T-2", "r2"), &limits(2), now)
            .unwrap(),
    );
    assert_eq!(second.started_seq, 2);
    let third = denied(
        store
            .admit(&request("local", "T-3", "r3"), &limits(2), now)
            .unwrap(),
    );
    assert_eq!(third.current, 2);
}

#[test]
fn one_connection_at_a_time_holds_the_start_up_lock() {
    let options = fresh_options();
    let (a, b) = (open(&options), open(&options));
    let held = a.startup_lock(Duration::from_secs(5)).unwrap();
    assert!(held.is_some());
    assert!(
        b.startup_lock(Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    drop(held);
    assert!(b.startup_lock(Duration::from_secs(5)).unwrap().is_some());
}

/// A holder that died (here: a lease row written by hand, as a process
/// killed mid-sweep leaves it) holds the lock until its lease runs out, and
/// no longer: the lock is a row, not a session lock a pooled connection
/// could keep for whoever is routed to it next.
#[test]
fn a_start_up_lease_left_by_a_dead_holder_is_taken_once_it_runs_out() {
    let options = fresh_options();
    let store = open(&options);
    let mut client = postgres::Client::connect(&server().url("inflight"), postgres::NoTls).unwrap();
    client
        .execute(
            &format!(
                "INSERT INTO \"{}\".sweep_leases (purpose, holder, until) \
                 VALUES ($1, 'a holder that died', floor(extract(epoch FROM now()) * 1000)::bigint + 1500)",
                options.schema
            ),
            &[&format!("inflight-sweep:{}", options.schema)],
        )
        .unwrap();
    assert!(
        store
            .startup_lock(Duration::from_millis(300))
            .unwrap()
            .is_none(),
        "the lease is still running"
    );
    let started = std::time::Instant::now();
    let held = store.startup_lock(Duration::from_secs(5)).unwrap();
    assert!(held.is_some(), "taken once it ran out");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Dropped: the row is gone, not left to run out.
    drop(held);
    let left: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{}\".sweep_leases", options.schema),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// Two stores of two schemas through PgBouncer, sharing its server
/// connections: each reads only its own (a session `search_path` would
/// have followed the connection, not the store).
#[test]
fn through_pgbouncer_a_store_reads_only_its_own_schema() {
    let through = |options: &PgOptions| {
        let mut options = options.clone();
        options.url = bouncer().url("inflight");
        open(&options)
    };
    let (a_options, b_options) = (fresh_options(), fresh_options());
    let (a, b) = (through(&a_options), through(&b_options));
    let now = SystemClock.now();
    for i in 0..20 {
        admitted(
            a.admit(
                &request("local", &format!("A-{i}"), &format!("a{i}")),
                &limits(100),
                now,
            )
            .unwrap(),
        );
        assert!(b.open_slots().unwrap().is_empty(), "b sees a's slot {i}");
        assert!(b.events_after(0, 100).unwrap().is_empty());
    }
    assert_eq!(a.open_slots().unwrap().len(), 20);
    admitted(
        b.admit(&request("local", "B-0", "b0"), &limits(1), now)
            .unwrap(),
    );
    assert_eq!(b.open_slots().unwrap().len(), 1);
    assert_eq!(a.open_slots().unwrap().len(), 20);
    // And the rows are where the store was told: direct, by schema.
    let direct = open(&b_options);
    assert_eq!(direct.open_slots().unwrap().len(), 1);
    let direct = open(&a_options);
    assert_eq!(direct.open_slots().unwrap().len(), 20);
}

/// Through PgBouncer, the start-up lock a store drops is free for the next
/// (a session lock would have stayed with the pooled server connection).
#[test]
fn through_pgbouncer_the_start_up_lock_is_released_when_dropped() {
    let mut options = fresh_options();
    options.url = bouncer().url("inflight");
    let (a, b) = (open(&options), open(&options));
    for _ in 0..3 {
        let held = a.startup_lock(Duration::from_secs(5)).unwrap();
        assert!(held.is_some());
        assert!(
            b.startup_lock(Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
        drop(held);
        let held = b.startup_lock(Duration::from_secs(5)).unwrap();
        assert!(held.is_some(), "released by a, taken by b");
        drop(held);
    }
}

#[test]
fn the_password_never_shows() {
    let secret = "hunter2-never-print-me";
    let mut options = fresh_options();
    options.password = Some(secret.into());
    assert!(!format!("{options:?}").contains(secret));
    let store = open(&options);
    assert!(!store.location().contains(secret));
    assert!(!format!("{store:?}").contains(secret));
    // Nothing listens there: the connection error names the place, not the
    // password.
    let mut unreachable = PgOptions::new("postgresql://inflight@127.0.0.1:1/inflight");
    unreachable.password = Some(secret.into());
    unreachable.connect_timeout = Duration::from_secs(2);
    let error = PgLedger::open(unreachable).unwrap_err().to_string();
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert!(!error.contains(secret), "{error}");
    // A password in the URL is refused, and not repeated.
    let error = PgLedger::open(PgOptions::new(format!(
        "postgresql://inflight:{secret}@127.0.0.1:1/inflight"
    )))
    .unwrap_err()
    .to_string();
    assert!(error.contains("password_env"), "{error}");
    assert!(!error.contains(secret), "{error}");
}

#[test]
fn a_bad_schema_name_is_refused_by_name() {
    let mut options = fresh_options();
    options.schema = "Robert'); DROP TABLE students;--".into();
    let error = PgLedger::open(options).unwrap_err().to_string();
    assert!(error.contains("schema"), "{error}");
}

#[test]
fn an_import_is_idempotent() {
    let store = open(&fresh_options());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.json");
    std::fs::write(
        &path,
        r#"{"events": [
            {"kind": "execution_started", "task_id": "A", "backend": "local", "timestamp": "2026-11-01T10:00:00Z"},
            {"kind": "execution_finished", "task_id": "A", "backend": "local", "timestamp": "2026-11-01T10:05:00Z"},
            {"kind": "execution_started", "task_id": "B", "backend": "local", "timestamp": "2026-11-01T11:00:00Z"},
            {"kind": "skip_budget", "task_id": "C", "backend": "local", "timestamp": "2026-11-01T11:00:00Z"}
        ]}"#,
    )
    .unwrap();
    let first = store.import_usage_json(&path).unwrap();
    assert_eq!(
        (first.events_recorded, first.slots_opened, first.unrelated),
        (3, 1, 1)
    );
    let again = store.import_usage_json(&path).unwrap();
    assert_eq!(
        (
            again.events_recorded,
            again.already_imported,
            again.slots_opened
        ),
        (0, 3, 0)
    );
    let open = store.open_slots().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key, key("local", "B"));
    assert_eq!(
        open[0].started_at,
        Timestamp::parse_rfc3339("2026-11-01T11:00:00Z").unwrap()
    );
    assert_eq!(store.attempts(&open[0].key.task_id).unwrap().started, 1);
}

/// The advisory check reads what an admission would, and locks nothing.
#[test]
fn check_admission_answers_as_an_admission_would() {
    let store = open(&fresh_options());
    let now = SystemClock.now();
    let candidate = key("b", "next");
    assert_eq!(
        store.check_admission(&candidate, &limits(1), now).unwrap(),
        None
    );
    admitted(
        store
            .admit(&request("b", "T", "r"), &limits(1), now)
            .unwrap(),
    );
    let denial = store
        .check_admission(&candidate, &limits(1), now)
        .unwrap()
        .expect("the cap is full");
    assert_eq!(
        denial.reason,
        ledger_core::DenyReason::BackendConcurrencyExceeded
    );
    let mut hourly = limits(5);
    hourly.backend.max_per_hour = Some(1);
    let denial = store
        .check_admission(&candidate, &hourly, now)
        .unwrap()
        .unwrap();
    assert_eq!(denial.window, Some(ledger_core::RateWindow::Hourly));
    // Checking wrote nothing: one start in the log.
    assert_eq!(store.events_after(0, usize::MAX).unwrap().len(), 1);
}

/// A read-only store (what `watchdog status`, `events` and `metrics`
/// open) creates no schema, reads what the writers wrote, and the server
/// refuses its writes.
#[test]
fn a_read_only_store_creates_nothing_and_writes_nothing() {
    use ledger_core::LedgerStore;
    let options = fresh_options();
    let missing = PgLedger::open_read_only(options.clone()).unwrap_err();
    assert!(
        missing.to_string().contains("no inflight ledger in schema"),
        "{missing}"
    );
    // Still nothing there: a writer creates it from scratch.
    let writer = PgLedger::open(options.clone()).unwrap();
    let now = writer.now(T0).unwrap();
    admitted(
        writer
            .admit(&request("local", "t1", "run-1"), &limits(2), now)
            .unwrap(),
    );
    let reader = PgLedger::open_read_only(options).unwrap();
    assert_eq!(reader.open_slots().unwrap().len(), 1);
    assert_eq!(reader.events_after(0, 10).unwrap().len(), 1);
    let refused = reader
        .admit(&request("local", "t2", "run-2"), &limits(2), now)
        .unwrap_err();
    assert!(refused.to_string().contains("read-only"), "{refused}");
    assert_eq!(writer.open_slots().unwrap().len(), 1);
}
