//! The ledger's error type.

use std::path::PathBuf;
use std::time::Duration;

/// A boxed error from the storage engine. redb's own types stay out of the
/// public API so that callers are not tied to its major version.
pub type StorageSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong with a ledger file. Every variant that
/// concerns a file names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The file exists but is not an inflight ledger (empty, random bytes,
    /// another program's redb file). It was left untouched.
    #[error("{path} is not an inflight ledger: {detail}; the file was left untouched")]
    NotALedger {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// The file was written by a newer inflight with a schema this build does
    /// not know. It was left untouched.
    #[error(
        "{path} has ledger schema version {found}, newer than the {supported} this build \
         understands; upgrade inflight (the file was left untouched)"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version stamped in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// The file is a ledger but its contents are damaged. It was left
    /// untouched; restore it from a backup or move it aside.
    #[error("{path} is corrupt: {detail}; the file was left untouched")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Another process holds the file in a mode that excludes this one (for
    /// example an exclusive-mode embedder while this process wants to share).
    #[error(
        "{path} is held by another process in an incompatible mode (every process sharing a \
         ledger must open it in multi-process mode)"
    )]
    AlreadyOpen {
        /// The file.
        path: PathBuf,
    },
    /// No write transaction could be had before the deadline: another process
    /// is holding the write lock for too long.
    #[error("{path} stayed locked by another writer for {waited:?}; gave up")]
    Busy {
        /// The file.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
    },
    /// An earlier I/O error (a full disk, say) left this process's handle
    /// on the file unusable: redb refuses every call on it until the file
    /// is opened again. The file itself is intact (commits are atomic); a
    /// fresh open reads it.
    #[error(
        "{path}: an earlier I/O error (a full disk?) left the open ledger unusable until it is opened again"
    )]
    NeedsReopen {
        /// The file.
        path: PathBuf,
    },
    /// A write to a ledger opened for reading only.
    #[error("{path}: opened read-only; nothing is written to it")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// An I/O error on the file or its folder.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The storage engine failed.
    #[error("{path}: storage error: {source}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: StorageSource,
    },
    /// A record in the file could not be decoded.
    #[error("{path}: undecodable record in table {table}: {detail}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The table holding the record.
        table: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// The database behind a shared store failed, refused a statement or
    /// could not be reached. `location` names it without any password.
    #[error("{location}: {source}")]
    Database {
        /// The database and schema (`postgresql://inflight@db:5432/inflight (schema inflight)`).
        location: String,
        /// What the database or its client said.
        #[source]
        source: StorageSource,
    },
    /// The database's ledger schema was written by a newer inflight. It
    /// was left untouched.
    #[error(
        "{location} has ledger schema version {found}, newer than the {supported} this build \
         understands; upgrade inflight (nothing was changed)"
    )]
    NewerDatabaseSchema {
        /// The database and schema.
        location: String,
        /// The version recorded there.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// The `usage.json` given to an import is not in the reference format at
    /// all (individual bad entries are counted, not fatal).
    #[error("{path}: not a usage.json ledger: {detail}")]
    ImportFormat {
        /// The file being imported.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The ledger's result type.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
