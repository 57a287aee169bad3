//! [`PgLedger`]: the ledger's operations as SQL.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::{
    AdmissionCounts, AdmitOutcome, AdmitRequest, Backend, Event, EventKind, ExecutorIdentity,
    FinishOutcome, FinishReason, ImportReport, LedgerError, LedgerStore, Limits, Owner,
    PruneReport, RateWindow, Result, RunId, Slot, SlotKey, StoreLock, TaskAttempts, TaskId,
    Timestamp, UpdateOutcome, admission,
};
use postgres::Row;

use crate::schema;
use crate::sql::{Fail, Param, Step, decode, encode, not_encoded, settle};
use crate::worker::{Connection, Connector, Worker, database};
use crate::{PgOptions, TimeSource};

/// The ledger in a PostgreSQL schema, shared by every host that opens it.
pub struct PgLedger {
    pub(crate) worker: Worker,
    options: Arc<PgOptions>,
    location: String,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("location", &self.location)
            .field("time", &self.options.time)
            .finish_non_exhaustive()
    }
}

/// The database's clock, or the caller's, as SQL sees it: `$n` is the
/// caller's time (NULL with [`TimeSource::Database`]).
macro_rules! now_sql {
    ($n:literal) => {
        concat!(
            "coalesce($",
            $n,
            "::bigint, floor(extract(epoch FROM now()) * 1000)::bigint)"
        )
    };
}
pub(crate) use now_sql;

impl PgLedger {
    /// Connects, creates the schema if it is missing (or checks its
    /// version), and returns the store.
    pub fn open(options: PgOptions) -> Result<Self> {
        ledger_core::blocking::entering("opening a PostgreSQL ledger");
        let (connector, location) = connector(&options, false)?;
        let worker = Worker::start("ledger-postgres", connector, location.clone())?;
        let schema = options.schema.clone();
        worker.run(move |c| schema::prepare(c, &schema))?;
        Ok(Self {
            worker,
            options: Arc::new(options),
            location,
        })
    }

    /// Connects for reading only: a schema that is missing or not at this
    /// build's version is an error (nothing is created or migrated), and the
    /// session is read-only, so the server refuses any write.
    pub fn open_read_only(options: PgOptions) -> Result<Self> {
        ledger_core::blocking::entering("opening a PostgreSQL ledger");
        let (connector, location) = connector(&options, true)?;
        let worker = Worker::start("ledger-postgres", connector, location.clone())?;
        let schema = options.schema.clone();
        worker.run(move |c| schema::check(c, &schema))?;
        Ok(Self {
            worker,
            options: Arc::new(options),
            location,
        })
    }

    /// The caller's time, if this store uses it.
    pub(crate) fn caller(&self, now: Timestamp) -> Option<i64> {
        match self.options.time {
            TimeSource::Caller => Some(now.as_unix_millis()),
            TimeSource::Database => None,
        }
    }
}

/// The connection settings for `options`, and the store's location for
/// messages (the URL without any password, and the schema).
/// Checks a `[ledger] url` as the store will read it: a PostgreSQL URL
/// (or key-value string) that carries no password, which belongs in the
/// environment (`password_env`), never in a file or a process list. The
/// error never repeats the URL.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    parse_url(url).map(|_| ())
}

fn parse_url(url: &str) -> std::result::Result<postgres::Config, String> {
    let config: postgres::Config = url
        .parse()
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    if config.get_password().is_some() {
        return Err(
            "the URL carries a password: give it through the environment (password_env) instead"
                .into(),
        );
    }
    Ok(config)
}

fn connector(options: &PgOptions, read_only: bool) -> Result<(Connector, String)> {
    let bad = |detail: String| LedgerError::Database {
        location: "[ledger] url".into(),
        source: detail.into(),
    };
    if !schema::valid_schema(&options.schema) {
        return Err(bad(format!(
            "schema {:?}: use lower-case letters, digits and underscores, starting with a letter",
            options.schema
        )));
    }
    let mut config = parse_url(&options.url).map_err(bad)?;
    if let Some(password) = &options.password {
        config.password(password);
    }
    config
        .connect_timeout(options.connect_timeout)
        .application_name("inflight");
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let location = format!(
        "postgresql://{}@{host}:{port}/{} (schema {})",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or(""),
        options.schema
    );
    let tls = tls().map_err(|e| bad(format!("TLS: {e}")))?;
    Ok((
        Connector {
            config,
            tls,
            schema: format!("\"{}\"", options.schema),
            read_only,
        },
        location,
    ))
}

/// TLS through rustls (ring), verified against the system's roots; used
/// when the URL's `sslmode` asks for it.
fn tls() -> std::result::Result<postgres_rustls::MakeTlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the system store holds but rustls cannot parse is
        // skipped, as browsers do.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(postgres_rustls::MakeTlsConnector::new(
        tokio_rustls::TlsConnector::from(Arc::new(config)),
    ))
}

fn slot_of(location: &str, row: &Row) -> Step<Slot> {
    let invalid = |e: ledger_core::IdError| {
        Fail::Ledger(LedgerError::Decode {
            path: location.into(),
            table: "open_slots",
            detail: e.to_string(),
        })
    };
    let owner: String = row.try_get(6)?;
    Ok(Slot {
        key: SlotKey::new(
            ledger_core::Backend::new(row.try_get::<_, String>(0)?).map_err(invalid)?,
            TaskId::new(row.try_get::<_, String>(1)?).map_err(invalid)?,
        ),
        run_id: RunId::new(row.try_get::<_, String>(2)?).map_err(invalid)?,
        started_at: Timestamp::from_unix_millis(row.try_get(3)?),
        lease_until: Timestamp::from_unix_millis(row.try_get(4)?),
        started_seq: row.try_get::<_, i64>(5)? as u64,
        owner: decode(location, "open_slots", &owner)?,
    })
}

/// The slot of `key` from a function's row: run, started at, lease,
/// started seq and owner from column `first` on.
fn slot_from_offset(location: &str, key: &SlotKey, row: &Row, first: usize) -> Step<Slot> {
    let run: String = row.try_get(first)?;
    let owner: String = row.try_get(first + 4)?;
    Ok(Slot {
        key: key.clone(),
        run_id: RunId::new(run).map_err(|e| {
            Fail::Ledger(LedgerError::Decode {
                path: location.into(),
                table: "open_slots",
                detail: e.to_string(),
            })
        })?,
        started_at: Timestamp::from_unix_millis(row.try_get(first + 1)?),
        lease_until: Timestamp::from_unix_millis(row.try_get(first + 2)?),
        started_seq: row.try_get::<_, i64>(first + 3)? as u64,
        owner: decode(location, "open_slots", &owner)?,
    })
}

fn slot_from(location: &str, key: &SlotKey, row: &Row) -> Step<Slot> {
    slot_from_offset(location, key, row, 0)
}

fn event_of(location: &str, row: &Row) -> Step<Event> {
    let text: String = row.try_get(0)?;
    decode(location, "events", &text)
}

/// A listed event (`event`, then `seq` and `at` at `columns`): one that
/// does not decode is listed as unreadable, in its place.
fn listed_event(row: &Row, columns: usize) -> Step<Event> {
    let text: String = row.try_get(0)?;
    let seq: i64 = row.try_get(columns)?;
    let at: i64 = row.try_get(columns + 1)?;
    Ok(Event::from_stored(
        u64::try_from(seq).unwrap_or(0),
        Some(Timestamp::from_unix_millis(at)),
        text.as_bytes(),
    ))
}

/// Stand-ins for the fields of an event only the database knows, which
/// [`template`] leaves out and `admit_one` / `finish_one` fill in.
const PLACEHOLDER_DENIAL: ledger_core::Denial = ledger_core::Denial {
    reason: ledger_core::DenyReason::AlreadyInFlight,
    window: None,
    current: 0,
    limit: 0,
};

/// An event's JSON without `seq`, `at` and the fields in `left_out`: what
/// the database completes. The shape stays serde's (`Event`'s own form).
fn template(location: &str, kind: EventKind, left_out: &[&str]) -> Step<String> {
    let event = Event {
        seq: 0,
        at: Timestamp::from_unix_millis(0),
        kind,
    };
    let mut value = serde_json::to_value(&event).map_err(|e| not_encoded(location, e))?;
    if let Some(fields) = value.as_object_mut() {
        for field in ["seq", "at"].iter().chain(left_out) {
            fields.remove(*field);
        }
    }
    encode(location, &value)
}

/// A function that answers one row answered none.
fn no_row(location: &str, function: &str) -> Fail {
    Fail::Ledger(database(location, format!("{function} returned no row")))
}

/// `d` in milliseconds, as the tables keep durations.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs one statement outside a transaction.
pub(crate) fn query(c: &mut Connection, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>> {
    c.query(sql, params)
}

const SELECT_SLOT: &str = "SELECT backend, task_id, run_id, started_at, lease_until, started_seq, owner \
     FROM {s}.open_slots WHERE backend = $1 AND task_id = $2";
const ADMIT_ONE: &str =
    "SELECT * FROM {s}.admit_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
const FINISH_ONE: &str = "SELECT * FROM {s}.finish_one($1, $2, $3, $4, $5, $6, $7)";
const COUNTS: &str = "SELECT * FROM {s}.admission_counts($1, $2, {s}.ms_now($3), $4, $5)";
const RENEW: &str = concat!(
    "UPDATE {s}.open_slots SET lease_until = GREATEST(lease_until, ",
    now_sql!(4),
    " + $5::bigint) WHERE backend = $1 AND task_id = $2 AND run_id = $3"
);
const RENEW_HELD: &str = concat!(
    "UPDATE {s}.open_slots SET lease_until = GREATEST(lease_until, ",
    now_sql!(4),
    " + $5::bigint) WHERE host = $1 AND owner::jsonb ->> 'boot_id' = $2 ",
    "AND owner::jsonb -> 'runner' = $3::text::jsonb RETURNING backend, task_id, run_id"
);
const DB_NOW: &str = concat!("SELECT ", now_sql!(1));
const SET_EXECUTOR: &str = "UPDATE {s}.open_slots SET owner = jsonb_set(owner::jsonb, '{executor}', $4::text::jsonb)::text \
     WHERE backend = $1 AND task_id = $2 AND run_id = $3";
const SET_HOLDER: &str = "UPDATE {s}.open_slots SET owner = $4 \
     WHERE backend = $1 AND task_id = $2 AND run_id = $3";
const OPEN_SLOTS: &str = "SELECT backend, task_id, run_id, started_at, lease_until, started_seq, owner \
     FROM {s}.open_slots ORDER BY backend COLLATE \"C\", task_id COLLATE \"C\"";
const LAST_FINISH: &str = "SELECT event FROM {s}.events \
     WHERE kind = 'finished' AND backend = $1 AND task_id = $2 ORDER BY seq DESC LIMIT 1";
const ATTEMPTS: &str = "SELECT (SELECT attempts FROM {s}.attempts WHERE task_id = $1), \
       (SELECT count(*) FROM {s}.open_slots WHERE task_id = $1)";
// Each event, and whether its transaction is older than every one still
// running: then its sequence number is below any a later commit can bring
// (see `next_event_seqs`), and it is safe to hand to a reader following the
// log. The safe events are a prefix of the answer.
const EVENTS_AFTER: &str = "SELECT event, xid < pg_snapshot_xmin(pg_current_snapshot()), seq, at FROM {s}.events \
     WHERE seq > $1 ORDER BY seq LIMIT $2";
const EVENTS_BETWEEN: &str =
    "SELECT event, seq, at FROM {s}.events WHERE at >= $1 AND at < $2 ORDER BY at, seq";
const EVENTS_BEFORE: &str =
    "SELECT event, seq, at FROM {s}.events WHERE seq < $1 ORDER BY seq DESC LIMIT $2";
const TASK_EVENTS: &str =
    "SELECT event, seq, at FROM {s}.events WHERE task_id = $1 ORDER BY seq DESC LIMIT $2";
const STARTS_AFTER: &str =
    "SELECT started_at FROM {s}.starts WHERE backend = $1 AND started_at > $2 ORDER BY started_at";
const PRUNE: &str = concat!(
    "WITH bounds AS (SELECT LEAST(",
    "(SELECT min(started_seq) FROM {s}.open_slots), ",
    "(SELECT max(seq) FROM {s}.events), ",
    "(SELECT min(seq) FROM {s}.events WHERE at >= ",
    now_sql!(1),
    " - $2::bigint)) AS stop), ",
    "doomed AS (SELECT seq, kind FROM {s}.events, bounds WHERE seq < bounds.stop ORDER BY seq LIMIT $3::bigint), ",
    "gone AS (DELETE FROM {s}.events WHERE seq IN (SELECT seq FROM doomed) RETURNING seq, kind), ",
    "starts_gone AS (DELETE FROM {s}.starts WHERE seq IN (SELECT seq FROM gone WHERE kind = 'started')) ",
    "SELECT count(*) FROM gone"
);
/// How long `events_after` waits for older transactions still running.
const FOLLOW_PATIENCE: Duration = Duration::from_secs(2);
// The start-up sweep's lock is a lease row, not a session lock: a session
// lock stays with a pooled server connection (PgBouncer) after its holder
// has gone, and the next client routed there would hold it too. A row is
// taken when free or when its lease ran out (a holder that died), renewed
// while its token lives, deleted when the token is dropped.
const TAKE_SWEEP_LEASE: &str = concat!(
    "INSERT INTO {s}.sweep_leases AS l (purpose, holder, until) VALUES ($1, $2, ",
    now_sql!(4),
    " + $3) ON CONFLICT (purpose) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until ",
    "WHERE l.until <= ",
    now_sql!(4),
    " RETURNING holder"
);
const RENEW_SWEEP_LEASE: &str = concat!(
    "UPDATE {s}.sweep_leases SET until = ",
    now_sql!(4),
    " + $3 WHERE purpose = $1 AND holder = $2"
);
const END_SWEEP_LEASE: &str = "DELETE FROM {s}.sweep_leases WHERE purpose = $1 AND holder = $2";

/// How long a start-up sweep's lease lasts unrenewed (its holder died), and
/// how often its token renews it.
const SWEEP_LEASE: Duration = Duration::from_secs(30);
const SWEEP_RENEW: Duration = Duration::from_secs(10);

/// The length of `window` in milliseconds, when `limits` caps it (what
/// `admission_counts` takes: NULL for a window it need not count).
fn window(limits: &Limits, window: RateWindow) -> Option<i64> {
    let cap = match window {
        RateWindow::Hourly => limits.backend.max_per_hour,
        RateWindow::Daily => limits.backend.max_per_day,
    };
    cap.map(|_| window.length().as_millis() as i64)
}

/// The cap rule's counts from `admission_counts`' five columns, from
/// column `first` on.
fn counts_from(row: &Row, first: usize) -> Step<AdmissionCounts> {
    let count = |i: usize| -> Step<Option<u64>> {
        Ok(row
            .try_get::<_, Option<i64>>(first + i)?
            .map(|n| n.max(0) as u64))
    };
    Ok(AdmissionCounts {
        key_in_flight: row.try_get(first)?,
        open_total: count(1)?.unwrap_or(0),
        open_backend: count(2)?.unwrap_or(0),
        starts_last_hour: count(3)?,
        starts_last_day: count(4)?,
    })
}

/// An update of `run`'s slot that touched `rows` rows.
fn update_outcome(rows: u64) -> UpdateOutcome {
    if rows == 0 {
        UpdateOutcome::NotInFlight
    } else {
        UpdateOutcome::Updated
    }
}

impl LedgerStore for PgLedger {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn admit(
        &self,
        request: &AdmitRequest,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<AdmitOutcome> {
        let request = request.clone();
        let limits = *limits;
        let caller_now = self.caller(now);
        self.worker.run(move |c| {
            // One round trip: `admit_one` reads, decides and writes, and
            // its statement's implicit transaction commits it.
            let location = c.location().to_owned();
            let key = &request.key;
            let templates = (|| -> Step<(String, String, String)> {
                let started = EventKind::Started {
                    key: key.clone(),
                    run_id: request.run_id.clone(),
                    owner: request.owner.clone(),
                };
                let denied = EventKind::Denied {
                    key: key.clone(),
                    run_id: request.run_id.clone(),
                    denial: PLACEHOLDER_DENIAL,
                };
                Ok((
                    encode(&location, &request.owner)?,
                    template(&location, started, &[])?,
                    template(&location, denied, &["denial"])?,
                ))
            })();
            let (owner, started, denied) = settle(c, templates)?;
            let cap = |cap: Option<u32>| cap.map(i64::from);
            let rows = c.query(
                ADMIT_ONE,
                &[
                    &key.backend.as_str(),
                    &key.task_id.as_str(),
                    &request.run_id.as_str(),
                    &request.owner.host,
                    &owner,
                    &millis(request.lease),
                    &cap(limits.global_max_concurrent),
                    &i64::from(limits.backend.max_concurrent),
                    &cap(limits.backend.max_per_hour),
                    &cap(limits.backend.max_per_day),
                    &caller_now,
                    &started,
                    &denied,
                ],
            )?;
            let outcome = (|| -> Step<AdmitOutcome> {
                let row = rows.first().ok_or_else(|| no_row(&location, "admit_one"))?;
                if let Some(denial) = row.try_get::<_, Option<String>>(5)? {
                    return Ok(AdmitOutcome::Denied(decode(&location, "events", &denial)?));
                }
                Ok(AdmitOutcome::Admitted(slot_from(&location, key, row)?))
            })();
            settle(c, outcome)
        })
    }

    fn finish(
        &self,
        key: &SlotKey,
        expected_run: Option<&RunId>,
        reason: FinishReason,
        now: Timestamp,
    ) -> Result<FinishOutcome> {
        let key = key.clone();
        let expected = expected_run.cloned();
        let caller_now = self.caller(now);
        self.worker.run(move |c| {
            // One round trip: `finish_one` checks the run, closes the slot,
            // writes the event and counts the attempt.
            let location = c.location().to_owned();
            let counter = reason.attempts_counter();
            let templates = (|| -> Step<(String, String)> {
                let finished = EventKind::Finished {
                    key: key.clone(),
                    run_id: RunId::generate(Timestamp::from_unix_millis(0)),
                    started_at: Timestamp::from_unix_millis(0),
                    reason,
                    role: None,
                };
                Ok((
                    template(&location, finished, &["run_id", "started_at", "role"])?,
                    encode(&location, &TaskAttempts::default())?,
                ))
            })();
            let (finished, fresh) = settle(c, templates)?;
            let rows = c.query(
                FINISH_ONE,
                &[
                    &key.backend.as_str(),
                    &key.task_id.as_str(),
                    &expected.as_ref().map(RunId::as_str),
                    &caller_now,
                    &finished,
                    &counter,
                    &fresh,
                ],
            )?;
            let outcome = (|| -> Step<FinishOutcome> {
                let row = rows
                    .first()
                    .ok_or_else(|| no_row(&location, "finish_one"))?;
                let outcome: String = row.try_get(0)?;
                match outcome.as_str() {
                    "finished" => Ok(FinishOutcome::Finished(slot_from_offset(
                        &location, &key, row, 1,
                    )?)),
                    "other_run" => {
                        let open_run: String = row.try_get(1)?;
                        let open_run = RunId::new(open_run).map_err(|e| {
                            Fail::Ledger(LedgerError::Decode {
                                path: location.clone().into(),
                                table: "open_slots",
                                detail: e.to_string(),
                            })
                        })?;
                        Ok(FinishOutcome::OtherRunInFlight { open_run })
                    }
                    _ => Ok(FinishOutcome::NotInFlight),
                }
            })();
            settle(c, outcome)
        })
    }

    fn renew_lease(
        &self,
        key: &SlotKey,
        run: &RunId,
        lease: Duration,
        now: Timestamp,
    ) -> Result<UpdateOutcome> {
        let (key, run) = (key.clone(), run.clone());
        let caller_now = self.caller(now);
        let lease = millis(lease);
        self.worker.run(move |c| {
            let updated = c.execute(
                RENEW,
                &[
                    &key.backend.as_str(),
                    &key.task_id.as_str(),
                    &run.as_str(),
                    &caller_now,
                    &lease,
                ],
            );
            Ok(update_outcome(updated?))
        })
    }

    fn renew_leases(
        &self,
        runner: &Owner,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<(SlotKey, RunId)>> {
        let caller_now = self.caller(now);
        let lease = millis(lease);
        let (host, boot) = (runner.host.clone(), runner.boot_id.clone());
        let process = serde_json::to_string(&runner.runner)
            .map_err(|e| database(&self.location, format!("could not encode the runner: {e}")))?;
        self.worker.run(move |c| {
            let rows = query(
                c,
                RENEW_HELD,
                &[&host, &boot, &process, &caller_now, &lease],
            )?;
            let location = c.location().to_owned();
            let keys = rows
                .iter()
                .map(|row| -> Step<(SlotKey, RunId)> {
                    let invalid = |e: ledger_core::IdError| {
                        Fail::Ledger(LedgerError::Decode {
                            path: location.clone().into(),
                            table: "open_slots",
                            detail: e.to_string(),
                        })
                    };
                    Ok((
                        SlotKey::new(
                            ledger_core::Backend::new(row.try_get::<_, String>(0)?)
                                .map_err(invalid)?,
                            TaskId::new(row.try_get::<_, String>(1)?).map_err(invalid)?,
                        ),
                        RunId::new(row.try_get::<_, String>(2)?).map_err(invalid)?,
                    ))
                })
                .collect();
            settle(c, keys)
        })
    }

    fn now(&self, local: Timestamp) -> Result<Timestamp> {
        let caller_now = self.caller(local);
        self.worker.run(move |c| {
            let rows = query(c, DB_NOW, &[&caller_now])?;
            let now = rows.first().map(|row| row.try_get::<_, i64>(0)).transpose();
            let now = settle(c, now.map_err(Fail::Db))?;
            Ok(now.map_or(local, Timestamp::from_unix_millis))
        })
    }

    fn set_executor(
        &self,
        key: &SlotKey,
        run: &RunId,
        executor: ExecutorIdentity,
    ) -> Result<UpdateOutcome> {
        self.update_owner(SET_EXECUTOR, key, run, executor)
    }

    fn set_holder(&self, key: &SlotKey, run: &RunId, holder: &Owner) -> Result<UpdateOutcome> {
        self.update_owner(SET_HOLDER, key, run, holder.clone())
    }

    fn open_slots(&self) -> Result<Vec<Slot>> {
        self.worker.run(|c| {
            let rows = query(c, OPEN_SLOTS, &[])?;
            let location = c.location().to_owned();
            let slots = rows.iter().map(|row| slot_of(&location, row)).collect();
            settle(c, slots)
        })
    }

    fn slot(&self, key: &SlotKey) -> Result<Option<Slot>> {
        let key = key.clone();
        self.worker.run(move |c| {
            let rows = query(
                c,
                SELECT_SLOT,
                &[&key.backend.as_str(), &key.task_id.as_str()],
            )?;
            let location = c.location().to_owned();
            let slot = rows.first().map(|row| slot_of(&location, row)).transpose();
            settle(c, slot)
        })
    }

    fn last_finish(&self, key: &SlotKey) -> Result<Option<Event>> {
        let key = key.clone();
        self.worker.run(move |c| {
            let rows = query(
                c,
                LAST_FINISH,
                &[&key.backend.as_str(), &key.task_id.as_str()],
            )?;
            let location = c.location().to_owned();
            let event = rows.first().map(|row| event_of(&location, row)).transpose();
            settle(c, event)
        })
    }

    fn attempts(&self, task: &TaskId) -> Result<TaskAttempts> {
        let task = task.clone();
        self.worker.run(move |c| {
            let rows = query(c, ATTEMPTS, &[&task.as_str()])?;
            let location = c.location().to_owned();
            let attempts = (|| -> Step<TaskAttempts> {
                let Some(row) = rows.first() else {
                    return Ok(TaskAttempts::default());
                };
                let stored: Option<String> = row.try_get(0)?;
                let running: i64 = row.try_get(1)?;
                let mut attempts = match stored {
                    Some(text) => decode(&location, "attempts", &text)?,
                    None => TaskAttempts::default(),
                };
                // As in the redb store: only finishes are stored; the
                // dispatches still running are the open slots.
                attempts.started = attempts.finished() + running.max(0) as u64;
                Ok(attempts)
            })();
            settle(c, attempts)
        })
    }

    /// Waits (up to 2 s, `FOLLOW_PATIENCE`) for the transactions still running
    /// that began before the newest visible event's, so that a caller reads
    /// its own writes; past that, returns the safe prefix.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.worker.run(move |c| {
            let started = Instant::now();
            loop {
                let rows = query(c, EVENTS_AFTER, &[&after, &limit])?;
                let safe = rows
                    .iter()
                    .map(|row| row.try_get::<_, bool>(1))
                    .collect::<std::result::Result<Vec<_>, _>>();
                let safe = settle(c, safe.map_err(Fail::Db))?;
                let prefix = safe.iter().take_while(|s| **s).count();
                if prefix == rows.len() || started.elapsed() >= FOLLOW_PATIENCE {
                    let events = rows
                        .iter()
                        .take(prefix)
                        .map(|row| listed_event(row, 2))
                        .collect();
                    return settle(c, events);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    }

    fn events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<Event>> {
        let (from, to) = (from.as_unix_millis(), to.as_unix_millis());
        self.worker.run(move |c| {
            let rows = query(c, EVENTS_BETWEEN, &[&from, &to])?;
            let events = rows.iter().map(|row| listed_event(row, 1)).collect();
            settle(c, events)
        })
    }

    fn events_before(&self, before: u64, limit: usize) -> Result<Vec<Event>> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.worker.run(move |c| {
            let rows = query(c, EVENTS_BEFORE, &[&before, &limit])?;
            let events: Step<Vec<Event>> =
                rows.iter().rev().map(|row| listed_event(row, 1)).collect();
            settle(c, events)
        })
    }

    fn task_events(&self, task: &TaskId, limit: usize) -> Result<Vec<Event>> {
        let task = task.as_str().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.worker.run(move |c| {
            let rows = query(c, TASK_EVENTS, &[&task, &limit])?;
            let events: Step<Vec<Event>> =
                rows.iter().rev().map(|row| listed_event(row, 1)).collect();
            settle(c, events)
        })
    }

    fn starts_after(&self, backend: &Backend, since: Timestamp) -> Result<Vec<Timestamp>> {
        let (backend, since) = (backend.as_str().to_owned(), since.as_unix_millis());
        self.worker.run(move |c| {
            let rows = query(c, STARTS_AFTER, &[&backend, &since])?;
            let starts: Step<Vec<Timestamp>> = rows
                .iter()
                .map(|row| Ok(Timestamp::from_unix_millis(row.try_get(0)?)))
                .collect();
            settle(c, starts)
        })
    }

    fn prune(&self, now: Timestamp) -> Result<PruneReport> {
        const BATCH: i64 = 10_000;
        let caller_now = self.caller(now);
        let retention = millis(self.options.retention);
        self.worker.run(move |c| {
            let mut report = PruneReport::default();
            loop {
                let rows = query(c, PRUNE, &[&caller_now, &retention, &BATCH])?;
                let removed: i64 = settle(
                    c,
                    rows.first()
                        .map(|row| row.try_get(0))
                        .transpose()
                        .map_err(Fail::Db),
                )?
                .unwrap_or(0);
                report.events_removed += removed.max(0) as u64;
                if removed < BATCH {
                    return Ok(report);
                }
            }
        })
    }

    fn import_usage_json(&self, path: &Path) -> Result<ImportReport> {
        let plan = ledger_core::usage::plan_file(path)?;
        self.run(move |c| crate::import::apply(c, plan))
    }

    fn startup_lock(&self, timeout: Duration) -> Result<Option<StoreLock>> {
        // On a connection of its own, so that renewing the lease never
        // waits behind this store's calls.
        let (connector, location) = connector(&self.options, false)?;
        let worker = Worker::start("ledger-postgres-lock", connector, location)?;
        let lease = SweepLease {
            purpose: format!("inflight-sweep:{}", self.options.schema),
            holder: lease_holder(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if lease.call(&worker, TAKE_SWEEP_LEASE)? {
                return Ok(Some(StoreLock::new(lease.keep(worker))));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(25).min(timeout));
        }
    }
}

/// A start-up sweep's lease row: which lock, and who holds it.
#[derive(Clone)]
struct SweepLease {
    purpose: String,
    holder: String,
}

/// A name no other holder has: this host, this process, this take.
fn lease_holder() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TAKES: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}/{}/{nanos:x}/{}",
        host.trim(),
        std::process::id(),
        TAKES.fetch_add(1, Ordering::Relaxed)
    )
}

impl SweepLease {
    /// Runs one of the lease's statements; whether it touched the row.
    fn call(&self, worker: &Worker, sql: &'static str) -> Result<bool> {
        let (purpose, holder) = (self.purpose.clone(), self.holder.clone());
        let lease_ms = millis(SWEEP_LEASE);
        worker.run(move |c| {
            let params: &[&dyn Param] = match sql {
                END_SWEEP_LEASE => &[&purpose, &holder],
                _ => &[&purpose, &holder, &lease_ms, &None::<i64>],
            };
            Ok(c.execute(sql, params)? > 0)
        })
    }

    /// Keeps the lease while the returned token lives: a thread renews it,
    /// and deletes it when the token is dropped.
    fn keep(self, worker: Worker) -> HeldLease {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ledger-postgres-sweep-lease".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(SWEEP_RENEW)
                {
                    if let Err(e) = self.call(&worker, RENEW_SWEEP_LEASE) {
                        tracing::warn!(error = %e, "could not renew the start-up sweep's lease");
                    }
                }
                // Another process may sweep at once; a lease left behind
                // would only make it wait out SWEEP_LEASE.
                if let Err(e) = self.call(&worker, END_SWEEP_LEASE) {
                    tracing::warn!(error = %e, "could not end the start-up sweep's lease");
                }
            })
            .ok();
        HeldLease {
            stop: Some(stop),
            thread,
        }
    }
}

/// The token of a held start-up lease.
struct HeldLease {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl PgLedger {
    /// Whether [`LedgerStore::admit`] would accept `key` now, and if not,
    /// which cap would fire. Read-only and advisory (no cap row is locked,
    /// so another admission may come in between): for operators' questions
    /// and the benchmark of the cap check.
    pub fn check_admission(
        &self,
        key: &SlotKey,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Option<ledger_core::Denial>> {
        let (key, limits, caller_now) = (key.clone(), *limits, self.caller(now));
        self.worker.run(move |c| {
            let rows = query(
                c,
                COUNTS,
                &[
                    &key.backend.as_str(),
                    &key.task_id.as_str(),
                    &caller_now,
                    &window(&limits, RateWindow::Hourly),
                    &window(&limits, RateWindow::Daily),
                ],
            )?;
            let counts = rows
                .first()
                .map(|row| counts_from(row, 0))
                .transpose()
                .map(Option::unwrap_or_default);
            Ok(admission(&settle(c, counts)?, &limits))
        })
    }

    /// Runs `job` on the store's connection (for the import).
    /// Writes `record` (JSON) into `run`'s slot's owner with `sql`
    /// (`$1` backend, `$2` task, `$3` run, `$4` the record), if `run` holds
    /// the slot.
    fn update_owner(
        &self,
        sql: &'static str,
        key: &SlotKey,
        run: &RunId,
        record: impl serde::Serialize + Send + 'static,
    ) -> Result<UpdateOutcome> {
        let (key, run) = (key.clone(), run.clone());
        self.worker.run(move |c| {
            let location = c.location().to_owned();
            let record = settle(c, encode(&location, &record))?;
            let updated = c.execute(
                sql,
                &[
                    &key.backend.as_str(),
                    &key.task_id.as_str(),
                    &run.as_str(),
                    &record,
                ],
            );
            Ok(update_outcome(updated?))
        })
    }

    pub(crate) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.worker.run(job)
    }
}
