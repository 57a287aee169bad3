//! The one place that knows which store backs the ledger: the factory the
//! binaries open it through, and the bridge that runs a store's blocking
//! calls off the async runtime.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_core::{Ledger, LedgerError, Result, Store};

use ledger_postgres::{PgLedger, PgOptions, TimeSource};

use crate::{Config, PostgresSettings, StoreSettings};

/// How long [`open_store`] waits for the open itself. redb's multi-process
/// open waits for the file's write lock, so a file another process holds
/// in a long write transaction would keep the caller from coming up at all.
const OPEN_PATIENCE: Duration = Duration::from_millis(250);

/// Opens the ledger store the configuration names: the redb file of
/// `[ledger] path`, opened in multi-process mode (the watcher, the watchdog
/// and every read-only command share the file), or the PostgreSQL schema of
/// `[ledger] url` with `store = "postgres"`; the binaries see only the
/// store contracts ([`ledger_core::LedgerStore`] and
/// [`ledger_core::FleetStore`]).
///
/// For PostgreSQL, the password is read from `password_env`'s variable;
/// an unset variable is an error that names it. Times are the database's.
///
/// An open that ends (or fails: a corrupt file, a newer schema) within a
/// quarter of a second is returned as it is. One that is still waiting then, because
/// another process holds the file's write lock, goes on in the background:
/// the store returned at once makes each call wait for it (on the blocking
/// pool, through [`on_store`](crate::on_store)), so a runner comes up, bounds its start-up
/// sweep, and claims once the lock frees.
///
/// A redb file whose handle an I/O error left unusable (a full disk) is
/// opened again: at the next call, then every few seconds until it opens.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, LedgerError> {
    #[cfg(debug_assertions)]
    ledger_core::blocking::check_each_call(refuse_on_a_runtime_thread);
    match &config.ledger.store {
        StoreSettings::Redb => open_redb(config),
        StoreSettings::Postgres(pg) => Ok(Arc::new(open_postgres(config, pg)?)),
    }
}

/// Opens the configured store for inspection only (`watchdog status`,
/// `events`, `metrics`): nothing is created, migrated or written. A redb
/// file that does not exist is an error naming it, and one on a read-only
/// mount or of another user (readable) can be inspected; a PostgreSQL
/// session is read-only on the server's side.
pub fn open_store_read_only(config: &Config) -> Result<Arc<dyn Store>, LedgerError> {
    #[cfg(debug_assertions)]
    ledger_core::blocking::check_each_call(refuse_on_a_runtime_thread);
    match &config.ledger.store {
        StoreSettings::Redb => {
            let ledger = Ledger::open_read_only(&config.ledger.path, ledger_options(config))
                .map_err(|e| match e {
                    LedgerError::Io { path, source }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        LedgerError::Io {
                            source: std::io::Error::new(
                                source.kind(),
                                "no ledger here ([ledger] path); a runner creates it at its first start",
                            ),
                            path,
                        }
                    }
                    other => other,
                })?;
            Ok(Arc::new(ledger))
        }
        StoreSettings::Postgres(pg) => Ok(Arc::new(PgLedger::open_read_only(postgres_options(
            config, pg,
        )?)?)),
    }
}

fn ledger_options(config: &Config) -> ledger_core::LedgerOptions {
    ledger_core::LedgerOptions {
        write_deadline: config.ledger.write_deadline,
        retention: config.ledger.retention,
        ..ledger_core::LedgerOptions::default()
    }
}

fn open_postgres(config: &Config, pg: &PostgresSettings) -> Result<PgLedger, LedgerError> {
    PgLedger::open(postgres_options(config, pg)?)
}

fn postgres_options(config: &Config, pg: &PostgresSettings) -> Result<PgOptions, LedgerError> {
    let mut options = PgOptions::new(pg.url.clone());
    options.schema = pg.schema.clone();
    options.retention = config.ledger.retention;
    options.time = TimeSource::Database;
    if let Some(name) = &pg.password_env {
        match std::env::var(name) {
            Ok(password) => options.password = Some(password),
            Err(_) => {
                return Err(LedgerError::Database {
                    location: pg.url.clone(),
                    source: format!(
                        "ledger.password_env names {name}, which is not set in the environment"
                    )
                    .into(),
                });
            }
        }
    }
    Ok(options)
}

fn open_redb(config: &Config) -> Result<Arc<dyn Store>, LedgerError> {
    let options = ledger_options(config);
    let path = config.ledger.path.clone();
    let (done, opened) = std::sync::mpsc::channel();
    let opening = path.clone();
    let reopen_with = options.clone();
    std::thread::Builder::new()
        .name("ledger-open".into())
        .spawn(move || {
            let _ = done.send(Ledger::open_with(&opening, options));
        })
        .map_err(|source| LedgerError::Io {
            path: path.clone(),
            source,
        })?;
    let state = match opened.recv_timeout(OPEN_PATIENCE) {
        Ok(ledger) => State::Open(Arc::new(ledger?)),
        Err(RecvTimeoutError::Timeout) => {
            tracing::warn!(path = %path.display(), "the ledger is slow to open (another process may hold its write lock); it opens in the background, and every use waits for it");
            State::Waiting(opened)
        }
        Err(RecvTimeoutError::Disconnected) => return Err(gone(&path)),
    };
    Ok(Arc::new(RedbStore {
        path,
        options: reopen_with,
        state: Mutex::new(state),
    }))
}

fn gone(path: &Path) -> LedgerError {
    LedgerError::Storage {
        path: path.to_path_buf(),
        source: "the thread opening the ledger ended without a result".into(),
    }
}

/// The redb ledger as the binaries hold it: opened in the background when
/// its open is slow, and opened again when an I/O error left the handle
/// unusable (redb refuses every call on a handle after a failed write, a
/// full disk's say, until the file is opened again; the file itself is
/// intact).
#[derive(Debug)]
struct RedbStore {
    path: PathBuf,
    options: ledger_core::LedgerOptions,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Waiting(Receiver<Result<Ledger>>),
    Open(Arc<Ledger>),
    /// Why the open failed, for every later call.
    Failed(String),
    /// The handle is unusable: the next call from `retry_at` on opens the
    /// file again.
    Broken {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// The longest wait between two attempts to open a broken ledger again.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(5);

impl RedbStore {
    /// The ledger, waiting for its open (blocking, like any store call), or
    /// opening it again after an I/O error.
    fn ledger(&self) -> Result<Arc<Ledger>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Waiting(opened) = &*state {
            *state = match opened.recv() {
                Ok(Ok(ledger)) => State::Open(Arc::new(ledger)),
                Ok(Err(e)) => State::Failed(e.to_string()),
                Err(_) => State::Failed(gone(&self.path).to_string()),
            };
        }
        if let State::Broken { retry_at, backoff } = &*state {
            let now = Instant::now();
            if now < *retry_at {
                return Err(LedgerError::NeedsReopen {
                    path: self.path.clone(),
                });
            }
            match Ledger::open_with(&self.path, self.options.clone()) {
                Ok(ledger) => {
                    tracing::info!(path = %self.path.display(), "the ledger is open again after an I/O error");
                    *state = State::Open(Arc::new(ledger));
                }
                Err(e) => {
                    let backoff = (*backoff * 2).min(MAX_REOPEN_BACKOFF);
                    tracing::warn!(path = %self.path.display(), error = %e, retry_in_ms = backoff.as_millis() as u64, "the ledger could not be opened again after an I/O error");
                    *state = State::Broken {
                        retry_at: now + backoff,
                        backoff,
                    };
                    return Err(e);
                }
            }
        }
        match &*state {
            State::Open(ledger) => Ok(ledger.clone()),
            State::Failed(why) => Err(LedgerError::Storage {
                path: self.path.clone(),
                source: format!("the ledger could not be opened: {why}").into(),
            }),
            State::Waiting(_) | State::Broken { .. } => Err(gone(&self.path)),
        }
    }

    /// Passes `error` on; one that says the handle is unusable has the
    /// next call open the file again.
    fn failed(&self, error: LedgerError) -> LedgerError {
        if matches!(error, LedgerError::NeedsReopen { .. }) {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*state, State::Open(_)) {
                tracing::warn!(path = %self.path.display(), %error, "the ledger will be opened again");
                let old = std::mem::replace(
                    &mut *state,
                    State::Broken {
                        retry_at: Instant::now(),
                        backoff: Duration::from_millis(100),
                    },
                );
                // Closing the old handle waits for its other users, who
                // come here with their own errors: never under the lock.
                drop(state);
                drop(old);
            }
        }
        error
    }
}

// Every call waits for the open, then goes to the ledger; a handle an I/O
// error left unusable is replaced.
ledger_core::forward_store!(RedbStore, |this| this.ledger()?,
    location: |this| this.path.display().to_string(),
    failed: |this, error| this.failed(error));

/// The check debug builds install with the first store the factory opens
/// (see [`ledger_core::blocking`]): a store opened or called on a thread
/// that drives a tokio runtime's tasks, outside
/// [`ledger_core::blocking::may_block`], is a bug: it stalls every task of
/// that runtime (shutdown signals, lease renewals) for as long as the
/// store takes. Every test that drives the services in-process or runs a
/// debug binary finds such a call.
#[cfg(debug_assertions)]
#[allow(
    clippy::panic,
    reason = "a debug build's assertion of a programming error, never of input"
)]
fn refuse_on_a_runtime_thread(what: &'static str) {
    if tokio::runtime::Handle::try_current().is_ok() && !ledger_core::blocking::marked() {
        panic!(
            "{what} on an async runtime's thread: it would block the runtime; \
             call the store through on_store (or on a blocking thread, inside \
             ledger_core::blocking::may_block)"
        );
    }
}
