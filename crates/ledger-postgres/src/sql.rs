//! What every transaction of the store is made of, shared by the store's
//! operations and the `usage.json` import: a job's failure and how it
//! settles, records in and out of JSON, a transaction with its statements
//! prepared, and the audit log's and the attempts' writes.

use ledger_core::{
    Event, EventKind, FinishReason, LedgerError, Result, SlotKey, TaskAttempts, TaskId, Timestamp,
};

use crate::worker::{Connection, database};

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
    serde_json::to_string(value).map_err(|e| {
        Fail::Ledger(database(
            location,
            format!("could not encode a record: {e}"),
        ))
    })
}

/// What a transaction's body decided.
pub(crate) enum Tx<T> {
    Commit(T),
    Abort(T),
}

/// Runs `body` in a transaction with the statements `sql`, prepared first.
pub(crate) fn transact<T>(
    c: &mut Connection,
    sql: &[&'static str],
    body: impl FnOnce(&mut postgres::Transaction<'_>, &[postgres::Statement], &str) -> Step<Tx<T>>,
) -> Result<T> {
    let statements = sql
        .iter()
        .map(|s| c.statement(s))
        .collect::<Result<Vec<_>>>()?;
    let location = c.location().to_owned();
    let outcome = (|| {
        let client = c.client()?;
        let mut tx = client.transaction()?;
        match body(&mut tx, &statements, &location)? {
            Tx::Commit(value) => {
                tx.commit()?;
                Ok(value)
            }
            Tx::Abort(value) => {
                tx.rollback()?;
                Ok(value)
            }
        }
    })();
    settle(c, outcome)
}

pub(crate) fn statement(
    statements: &[postgres::Statement],
    index: usize,
    location: &str,
) -> Step<postgres::Statement> {
    statements
        .get(index)
        .cloned()
        .ok_or_else(|| Fail::Ledger(database(location, "a statement was not prepared".into())))
}

pub(crate) const INSERT_EVENT: &str = "INSERT INTO events (seq, xid, at, kind, backend, task_id, event) \
     VALUES ($1, pg_current_xact_id(), $2, $3, $4, $5, $6)";
pub(crate) const ENSURE_ATTEMPTS: &str =
    "INSERT INTO attempts (task_id, attempts) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(crate) const LOCK_ATTEMPTS: &str =
    "SELECT attempts FROM attempts WHERE task_id = $1 FOR UPDATE";
pub(crate) const WRITE_ATTEMPTS: &str = "UPDATE attempts SET attempts = $2 WHERE task_id = $1";
/// The event's kind as the `kind` column holds it.
fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Started { .. } => "started",
        EventKind::Finished { .. } => "finished",
        EventKind::Denied { .. } => "denied",
        _ => "other",
    }
}

fn key_of(kind: &EventKind) -> Option<&SlotKey> {
    match kind {
        EventKind::Started { key, .. }
        | EventKind::Finished { key, .. }
        | EventKind::Denied { key, .. } => Some(key),
        _ => None,
    }
}

/// Appends `kind` at `seq`, taken by `next_event_seqs` in this transaction.
pub(crate) fn append(
    tx: &mut postgres::Transaction<'_>,
    insert: &postgres::Statement,
    location: &str,
    seq: i64,
    at: i64,
    kind: EventKind,
) -> Step<()> {
    let (backend, task) = key_of(&kind)
        .map(|k| (k.backend.as_str().to_owned(), k.task_id.as_str().to_owned()))
        .unwrap_or_default();
    let name = kind_name(&kind);
    let event = Event {
        seq: seq as u64,
        at: Timestamp::from_unix_millis(at),
        kind,
    };
    let text = encode(location, &event)?;
    tx.execute(insert, &[&seq, &at, &name, &backend, &task, &text])?;
    Ok(())
}

/// Folds a finish into the task's attempts, under the row's lock.
pub(crate) fn record_finish(
    tx: &mut postgres::Transaction<'_>,
    statements: [&postgres::Statement; 3],
    location: &str,
    task: &TaskId,
    reason: &FinishReason,
) -> Step<()> {
    let [ensure, lock, write] = statements;
    let fresh = encode(location, &TaskAttempts::default())?;
    tx.execute(ensure, &[&task.as_str(), &fresh])?;
    let row = tx.query_one(lock, &[&task.as_str()])?;
    let text: String = row.try_get(0)?;
    let mut attempts: TaskAttempts = decode(location, "attempts", &text)?;
    attempts.record_finish(reason);
    tx.execute(write, &[&task.as_str(), &encode(location, &attempts)?])?;
    Ok(())
}
