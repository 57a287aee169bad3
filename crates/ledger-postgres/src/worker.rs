//! One connection to the database, owned by a thread of its own.
//!
//! The `postgres` client runs a small tokio runtime inside; building,
//! using or dropping it on a thread that is already driving a runtime
//! panics. Store calls come from anywhere (a blocking-pool thread inside
//! `Handle::block_on`, a test, a benchmark), so the connection lives on a
//! plain thread and each call is a job sent to it, its answer awaited on a
//! channel: a blocking wait, which is what the store contract promises.

use std::sync::{Mutex, mpsc};

use ledger_core::{LedgerError, Result};
use postgres::Client;

use crate::sql::{Param, render, typed};

/// Parameters with their types, as the typed calls take them.
type Typed<'a> = [(
    &'a (dyn postgres::types::ToSql + Sync),
    postgres::types::Type,
)];

/// The client's error, with the server's message and detail spelled out
/// (`postgres::Error` displays only "db error").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PgError(String);

impl PgError {
    pub(crate) fn new(e: &postgres::Error) -> Self {
        let text = match e.as_db_error() {
            Some(db) => {
                let mut text =
                    format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
                if let Some(detail) = db.detail() {
                    text.push_str(&format!("; {detail}"));
                }
                text
            }
            None => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                text
            }
        };
        Self(text)
    }
}

/// How to connect, and the session's rules. The session itself is left
/// as the server opened it: nothing the store does depends on a session
/// setting or on staying on one server connection between transactions,
/// so a pooler that hands each transaction to any server connection
/// (PgBouncer in transaction mode) serves it unchanged.
pub(crate) struct Connector {
    pub(crate) config: postgres::Config,
    pub(crate) tls: postgres_rustls::MakeTlsConnector,
    /// The schema, quoted: put in each statement where it writes `{s}`.
    pub(crate) schema: String,
    /// Every statement runs in a read-only transaction, which the server
    /// enforces (inspection).
    pub(crate) read_only: bool,
}

/// The connection as a job sees it: connected on demand.
pub(crate) struct Connection {
    connector: Connector,
    client: Option<Client>,
    location: String,
}

impl Connection {
    /// The client, connecting first if there is none (or the last one
    /// broke).
    pub(crate) fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let client = self
                .connector
                .config
                .connect(self.connector.tls.clone())
                .map_err(|e| self.error(&e))?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| database(&self.location, "no connection".into()))
    }

    /// Runs `sql` once with `params`: its rows. In a read-only store, in a
    /// read-only transaction of its own.
    pub(crate) fn query(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Vec<postgres::Row>> {
        self.once(
            sql,
            params,
            |c, text, params| c.query_typed(text, params),
            |tx, text, params| tx.query_typed(text, params),
        )
    }

    /// Runs `sql` once with `params`: how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64> {
        self.once(
            sql,
            params,
            |c, text, params| c.execute_typed(text, params),
            |tx, text, params| tx.execute_typed(text, params),
        )
    }

    /// One statement, on the client, or in a read-only store in a
    /// read-only transaction of its own.
    fn once<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        on_client: impl FnOnce(&mut Client, &str, &Typed<'_>) -> std::result::Result<T, postgres::Error>,
        in_transaction: impl FnOnce(
            &mut postgres::Transaction<'_>,
            &str,
            &Typed<'_>,
        ) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let text = render(sql, &self.connector.schema);
        let params = typed(params);
        let read_only = self.connector.read_only;
        let client = self.client()?;
        let answer = if read_only {
            client
                .build_transaction()
                .read_only(true)
                .start()
                .and_then(|mut tx| {
                    let answer = in_transaction(&mut tx, &text, &params)?;
                    tx.commit().map(|()| answer)
                })
        } else {
            on_client(client, &text, &params)
        };
        answer.map_err(|e| self.error(&e))
    }

    /// The schema, quoted, as statements put it in place of `{s}`.
    pub(crate) fn schema(&self) -> &str {
        &self.connector.schema
    }

    /// Whether every transaction is to be read-only.
    pub(crate) fn read_only(&self) -> bool {
        self.connector.read_only
    }

    /// The ledger's error for a failed call; a connection the failure broke
    /// is dropped, so the next call connects again.
    pub(crate) fn error(&mut self, e: &postgres::Error) -> LedgerError {
        if e.is_closed() || self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        database(&self.location, PgError::new(e).0)
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }
}

/// The error every database failure becomes.
pub(crate) fn database(location: &str, detail: String) -> LedgerError {
    LedgerError::Database {
        location: location.to_owned(),
        source: Box::new(PgError(detail)),
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A connection thread.
pub(crate) struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
    location: String,
}

impl Worker {
    /// Starts the thread; it connects at its first job.
    pub(crate) fn start(name: &str, connector: Connector, location: String) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let mut connection = Connection {
            connector,
            client: None,
            location: location.clone(),
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Ends when the store is dropped; the client closes with it.
                while let Ok(job) = inbox.recv() {
                    job(&mut connection);
                }
            })
            .map_err(|e| {
                database(
                    &location,
                    format!("could not start a connection thread: {e}"),
                )
            })?;
        Ok(Self {
            jobs: Mutex::new(jobs),
            location,
        })
    }

    /// Runs `job` on the connection and waits for its answer.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        ledger_core::blocking::entering("a PostgreSQL ledger call");
        let (reply, answer) = mpsc::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(job(connection));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| database(&self.location, "the connection thread is gone".into()))?;
        answer.recv().map_err(|_| {
            database(
                &self.location,
                "the connection thread stopped mid-call".into(),
            )
        })?
    }
}
