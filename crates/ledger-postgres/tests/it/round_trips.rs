//! One round trip per admission and per finish: the cap rule's twin in SQL
//! decides as `ledger_core::admission` does, and the server's own
//! statement log counts what each call sends.

use ledger_core::conformance::{T0, key, limits, request};
use ledger_core::{
    AdmissionCounts, AdmitOutcome, BackendLimits, ExecutorIdentity, FinishReason, LedgerStore,
    Limits, ProcessIdentity, admission,
};
use ledger_postgres::{PgLedger, PgOptions, TimeSource};

use crate::support::{fresh_options, server};

/// A count as the cases draw it: mostly near the caps, sometimes beyond
/// what a `u32` holds (the denial's figure saturates).
fn count(rng: &mut fastrand::Rng) -> u64 {
    match rng.u8(0..20) {
        0 => rng.u64(u64::from(u32::MAX) - 2..u64::from(u32::MAX) + 3),
        _ => rng.u64(0..6),
    }
}

fn cap(rng: &mut fastrand::Rng) -> Option<u32> {
    match rng.u8(0..10) {
        0..=3 => None,
        4 => Some(u32::MAX),
        _ => Some(rng.u32(1..9)),
    }
}

/// 20,000 random cases through both, in one statement: the same decision,
/// the same figures, every time.
#[test]
fn the_cap_rule_in_sql_decides_as_ledger_core_does() {
    let options = fresh_options();
    drop(PgLedger::open(options.clone()).unwrap());
    let mut client = postgres::Client::connect(&options.url, postgres::NoTls).unwrap();
    let mut rng = fastrand::Rng::with_seed(25);
    let cases: Vec<(AdmissionCounts, Limits)> = (0..20_000)
        .map(|_| {
            let limits = Limits {
                global_max_concurrent: cap(&mut rng),
                backend: BackendLimits {
                    max_concurrent: cap(&mut rng).unwrap_or(0),
                    max_per_hour: cap(&mut rng),
                    max_per_day: cap(&mut rng),
                },
            };
            // A store reads a rate window's count only for a cap it has.
            let counts = AdmissionCounts {
                key_in_flight: rng.u8(0..20) == 0,
                open_total: count(&mut rng),
                open_backend: count(&mut rng),
                starts_last_hour: limits.backend.max_per_hour.map(|_| count(&mut rng)),
                starts_last_day: limits.backend.max_per_day.map(|_| count(&mut rng)),
            };
            (counts, limits)
        })
        .collect();
    let column = |f: &dyn Fn(&(AdmissionCounts, Limits)) -> Option<i64>| -> Vec<Option<i64>> {
        cases.iter().map(f).collect()
    };
    let n = |v: u64| Some(v as i64);
    let in_flight: Vec<bool> = cases.iter().map(|(c, _)| c.key_in_flight).collect();
    let columns = [
        column(&|(c, _)| n(c.open_total)),
        column(&|(c, _)| n(c.open_backend)),
        column(&|(c, _)| c.starts_last_hour.map(|v| v as i64)),
        column(&|(c, _)| c.starts_last_day.map(|v| v as i64)),
        column(&|(_, l)| l.global_max_concurrent.map(i64::from)),
        column(&|(_, l)| Some(i64::from(l.backend.max_concurrent))),
        column(&|(_, l)| l.backend.max_per_hour.map(i64::from)),
        column(&|(_, l)| l.backend.max_per_day.map(i64::from)),
    ];
    let sql = format!(
        "SELECT \"{}\".admission_rule(f, a, b, c, d, e, g, h, i)::text \
         FROM unnest($1::bool[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
                     $6::int8[], $7::int8[], $8::int8[], $9::int8[]) \
              WITH ORDINALITY AS t(f, a, b, c, d, e, g, h, i, n) ORDER BY n",
        options.schema
    );
    let [a, b, c, d, e, g, h, i] = &columns;
    let rows = client
        .query(&sql, &[&in_flight, a, b, c, d, e, g, h, i])
        .unwrap();
    assert_eq!(rows.len(), cases.len());
    let mut answers = std::collections::BTreeMap::new();
    for ((counts, limits), row) in cases.iter().zip(&rows) {
        let sql: Option<String> = row.get(0);
        let sql: Option<ledger_core::Denial> = sql.map(|text| serde_json::from_str(&text).unwrap());
        assert_eq!(
            sql,
            admission(counts, limits),
            "{counts:?} under {limits:?}"
        );
        let answer = sql.map_or("admitted".to_owned(), |d| {
            format!("{} {:?}", d.reason, d.window)
        });
        *answers.entry(answer).or_insert(0) += 1;
    }
    // Every answer occurs often: the cases reach every branch of the rule.
    assert_eq!(answers.len(), 6, "{answers:?}");
    assert!(answers.values().all(|n| *n >= 200), "{answers:?}");
}

/// The statements a call sent, from the server's log of every statement
/// of the `trips` database: `statement:` (simple protocol) and `execute`
/// (extended) lines, one per round trip, after `mark` bytes.
fn sent_since(mark: usize) -> Vec<String> {
    let log = server().log();
    log.get(mark..)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (_, statement) = line
                .split_once("LOG:  statement: ")
                .or_else(|| line.split_once("LOG:  execute <unnamed>: "))
                .or_else(|| line.split_once("LOG:  execute "))?;
            Some(statement.to_owned())
        })
        .collect()
}

/// Runs `call` and returns what it sent.
fn sent_by(call: impl FnOnce()) -> Vec<String> {
    let mark = server().log().len();
    call();
    sent_since(mark)
}

#[test]
fn an_admission_and_a_finish_are_one_round_trip_each() {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        server().create_database("trips").unwrap();
        server().log_statements("trips").unwrap();
    });
    let mut options = PgOptions::new(server().url("trips"));
    options.schema = "trips".into();
    options.time = TimeSource::Caller;
    drop(PgLedger::open(options.clone()).unwrap());

    // Opening a current schema (every keeper does, at its start): one.
    let mut store = None;
    let opened = sent_by(|| store = Some(PgLedger::open(options.clone()).unwrap()));
    let store = store.unwrap();
    assert_eq!(opened.len(), 1, "{opened:#?}");

    let key = key("local", "T-1");
    let admit = sent_by(|| {
        let admitted = store
            .admit(&request("local", "T-1", "r1"), &limits(1), T0)
            .unwrap();
        assert!(matches!(admitted, AdmitOutcome::Admitted(_)));
    });
    assert_eq!(admit.len(), 1, "{admit:#?}");
    assert!(admit[0].contains("admit_one("), "{admit:#?}");

    // A denial is one too, and so is a retry of the admission that landed.
    let denied = sent_by(|| {
        let outcome = store
            .admit(&request("local", "T-2", "r2"), &limits(1), T0)
            .unwrap();
        assert!(matches!(outcome, AdmitOutcome::Denied(_)));
    });
    assert_eq!(denied.len(), 1, "{denied:#?}");
    let retried = sent_by(|| {
        let outcome = store
            .admit(&request("local", "T-1", "r1"), &limits(1), T0)
            .unwrap();
        assert!(matches!(outcome, AdmitOutcome::Admitted(_)));
    });
    assert_eq!(retried.len(), 1, "{retried:#?}");

    let run = ledger_core::RunId::new("r1").unwrap();
    let executor = ExecutorIdentity {
        process: ProcessIdentity {
            pid: 4242,
            start_time: 1,
        },
        process_group: 4242,
    };
    let updates = sent_by(|| {
        store.set_executor(&key, &run, executor).unwrap();
        store
            .renew_lease(&key, &run, std::time::Duration::from_secs(60), T0)
            .unwrap();
    });
    assert_eq!(updates.len(), 2, "{updates:#?}");

    let finish = sent_by(|| {
        let outcome = store
            .finish(&key, Some(&run), FinishReason::Completed, T0)
            .unwrap();
        assert!(matches!(outcome, ledger_core::FinishOutcome::Finished(_)));
    });
    assert_eq!(finish.len(), 1, "{finish:#?}");
    assert!(finish[0].contains("finish_one("), "{finish:#?}");
    // What the one call wrote reads back whole.
    let attempts = store.attempts(&key.task_id).unwrap();
    assert_eq!((attempts.completed, attempts.finished()), (1, 1));
    let events = store.task_events(&key.task_id, 10).unwrap();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap()["kind"].clone())
        .collect();
    assert_eq!(kinds, ["started", "finished"]);
}
