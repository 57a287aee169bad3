//! What every transaction of the store is made of, shared by the store's
//! operations and the `usage.json` import: a job's failure and how it
//! settles, records in and out of JSON, statements sent with their
//! parameters' types, a transaction; and, for the import (an admission
//! and a finish write theirs inside `admit_one` and `finish_one`), the
//! audit log's and the attempts' writes.
//!
//! No statement is prepared under a name: each is sent unnamed with its
//! parameters' types (Parse, Bind, Execute and Sync in one round trip), so
//! no server connection keeps anything of this client's between calls,
//! and a pooler may hand each call or transaction to any of them
//! (PgBouncer in transaction mode, whose server connections would
//! otherwise meet another client's `s0`, `s1`, ...).

use ledger_core::{
    Event, EventKind, FinishReason, LedgerError, Result, TaskAttempts, TaskId, Timestamp,
};
use postgres::Row;
use postgres::types::{ToSql, Type};

use crate::worker::{Connection, database};

/// A statement's parameter, which knows its PostgreSQL type.
pub(crate) trait Param: ToSql + Sync {
    /// The type the statement receives it as.
    fn pg_type(&self) -> Type;
}

/// The types the store's statements take, by Rust type.
pub(crate) trait PgTyped {
    const TYPE: Type;
}

impl<T: PgTyped + ToSql + Sync> Param for T {
    fn pg_type(&self) -> Type {
        T::TYPE
    }
}

macro_rules! pg_typed {
    ($($rust:ty => $pg:ident),* $(,)?) => {
        $(impl PgTyped for $rust {
            const TYPE: Type = Type::$pg;
        })*
    };
}

pg_typed! {
    bool => BOOL,
    i32 => INT4,
    i64 => INT8,
    String => TEXT,
    &str => TEXT,
    Vec<u8> => BYTEA,
    &[u8] => BYTEA,
    Vec<i64> => INT8_ARRAY,
    Vec<String> => TEXT_ARRAY,
}

impl<T: PgTyped> PgTyped for Option<T> {
    const TYPE: Type = T::TYPE;
}

/// `sql` with the schema in place of its `{s}`.
pub(crate) fn render(sql: &str, schema: &str) -> String {
    sql.replace("{s}", schema)
}

/// `params` with their types, as `query_typed` takes them.
pub(crate) fn typed<'a>(params: &'a [&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (*p as &(dyn ToSql + Sync), p.pg_type()))
        .collect()
}

/// A transaction of the store's: its statements sent unnamed, with the
/// schema in place.
pub(crate) struct Txn<'a> {
    inner: postgres::Transaction<'a>,
    schema: &'a str,
    /// Where the store is, for messages.
    pub(crate) location: &'a str,
}

impl Txn<'_> {
    /// Every row `sql` answers.
    pub(crate) fn query(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
    ) -> std::result::Result<Vec<Row>, postgres::Error> {
        self.inner
            .query_typed(&render(sql, self.schema), &typed(params))
    }

    /// The one row `sql` answers (an error otherwise).
    pub(crate) fn query_one(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
    ) -> std::result::Result<Row, postgres::Error> {
        self.inner
            .query_typed_one(&render(sql, self.schema), &typed(params))
    }

    /// The row `sql` answers, if any.
    pub(crate) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
    ) -> std::result::Result<Option<Row>, postgres::Error> {
        self.inner
            .query_typed_opt(&render(sql, self.schema), &typed(params))
    }

    /// How many rows `sql` changed.
    pub(crate) fn execute(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
    ) -> std::result::Result<u64, postgres::Error> {
        self.inner
            .execute_typed(&render(sql, self.schema), &typed(params))
    }
}

/// A failure inside a job: the database's (which may have broken the
/// connection) or the ledger's own (an undecodable record).
pub(crate) enum Fail {
    Db(postgres::Error),
    Ledger(LedgerError),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<LedgerError> for Fail {
    fn from(e: LedgerError) -> Self {
        Fail::Ledger(e)
    }
}

pub(crate) type Step<T> = std::result::Result<T, Fail>;

pub(crate) fn settle<T>(c: &mut Connection, outcome: Step<T>) -> Result<T> {
    match outcome {
        Ok(value) => Ok(value),
        Err(Fail::Db(e)) => Err(c.error(&e)),
        Err(Fail::Ledger(e)) => Err(e),
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    location: &str,
    table: &'static str,
    text: &str,
) -> Step<T> {
    serde_json::from_str(text).map_err(|e| {
        Fail::Ledger(LedgerError::Decode {
            path: location.into(),
            table,
            detail: e.to_string(),
        })
    })
}

pub(crate) fn encode(location: &str, value: &impl serde::Serialize) -> Step<String> {
    serde_json::to_string(value).map_err(|e| not_encoded(location, e))
}

/// A record that would not encode.
pub(crate) fn not_encoded(location: &str, e: serde_json::Error) -> Fail {
    Fail::Ledger(database(
        location,
        format!("could not encode a record: {e}"),
    ))
}

/// Runs `body` in a transaction (read-only in a read-only store) and
/// commits it.
pub(crate) fn transact<T>(
    c: &mut Connection,
    body: impl FnOnce(&mut Txn<'_>) -> Step<T>,
) -> Result<T> {
    let location = c.location().to_owned();
    let schema = c.schema().to_owned();
    let read_only = c.read_only();
    let outcome = (|| {
        let client = c.client()?;
        let inner = client.build_transaction().read_only(read_only).start()?;
        let mut tx = Txn {
            inner,
            schema: &schema,
            location: &location,
        };
        let value = body(&mut tx)?;
        tx.inner.commit()?;
        Ok(value)
    })();
    settle(c, outcome)
}

const INSERT_EVENT: &str = "INSERT INTO {s}.events (seq, xid, at, kind, backend, task_id, event) \
     VALUES ($1, pg_current_xact_id(), $2, $3, $4, $5, $6)";
const ENSURE_ATTEMPTS: &str =
    "INSERT INTO {s}.attempts (task_id, attempts) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const LOCK_ATTEMPTS: &str = "SELECT attempts FROM {s}.attempts WHERE task_id = $1 FOR UPDATE";
const WRITE_ATTEMPTS: &str = "UPDATE {s}.attempts SET attempts = $2 WHERE task_id = $1";
/// The event's kind as the `kind` column holds it.
fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Started { .. } => "started",
        EventKind::Finished { .. } => "finished",
        EventKind::Denied { .. } => "denied",
        _ => "other",
    }
}

/// Appends `kind` at `seq`, taken by `next_event_seqs` in this transaction.
pub(crate) fn append(tx: &mut Txn<'_>, seq: i64, at: i64, kind: EventKind) -> Step<()> {
    let (backend, task) = kind
        .key()
        .map(|k| (k.backend.as_str().to_owned(), k.task_id.as_str().to_owned()))
        .unwrap_or_default();
    let name = kind_name(&kind);
    let event = Event {
        seq: seq as u64,
        at: Timestamp::from_unix_millis(at),
        kind,
    };
    let text = encode(tx.location, &event)?;
    tx.execute(INSERT_EVENT, &[&seq, &at, &name, &backend, &task, &text])?;
    Ok(())
}

/// Folds a finish into the task's attempts, under the row's lock.
pub(crate) fn record_finish(tx: &mut Txn<'_>, task: &TaskId, reason: &FinishReason) -> Step<()> {
    let location = tx.location;
    let fresh = encode(location, &TaskAttempts::default())?;
    tx.execute(ENSURE_ATTEMPTS, &[&task.as_str(), &fresh])?;
    let row = tx.query_one(LOCK_ATTEMPTS, &[&task.as_str()])?;
    let text: String = row.try_get(0)?;
    let mut attempts: TaskAttempts = decode(location, "attempts", &text)?;
    attempts.record_finish(reason);
    tx.execute(
        WRITE_ATTEMPTS,
        &[&task.as_str(), &encode(location, &attempts)?],
    )?;
    Ok(())
}
