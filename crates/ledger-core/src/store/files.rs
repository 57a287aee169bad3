//! Opening a ledger file safely: the magic bytes before redb sees the
//! file, the schema through a read-only handle, the read-write open with
//! its contents put back if redb refuses them, panics of the storage engine
//! contained, and redb's errors mapped onto the ledger's.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use super::{Database, LedgerOptions, SharingMode};
use crate::error::{LedgerError, Result};
use crate::schema::{self, *};

/// The first bytes of every redb file. Checked before redb sees the file, so
/// that an empty or foreign file is refused without redb ever writing to it
/// (redb initialises an empty file it is asked to create).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

pub(super) fn storage_error(path: &Path, e: redb::Error) -> LedgerError {
    let path = path.to_path_buf();
    match e {
        redb::Error::Corrupted(detail) => LedgerError::Corrupt { path, detail },
        redb::Error::DatabaseAlreadyOpen => LedgerError::AlreadyOpen { path },
        redb::Error::PreviousIo => LedgerError::NeedsReopen { path },
        redb::Error::UpgradeRequired(v) => LedgerError::NotALedger {
            path,
            detail: format!("a redb file in the old format {v}"),
        },
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            LedgerError::NotALedger {
                path,
                detail: e.to_string(),
            }
        }
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            LedgerError::NotALedger {
                path,
                detail: "cut short: it ends before data it refers to".into(),
            }
        }
        redb::Error::Io(source) => LedgerError::Io { path, source },
        other => LedgerError::Storage {
            path,
            source: Box::new(other),
        },
    }
}

pub(super) fn check_schema(path: &Path, txn: &redb::ReadTransaction) -> Result<()> {
    let not_ours = |detail: &str| LedgerError::NotALedger {
        path: path.to_path_buf(),
        detail: detail.into(),
    };
    let meta = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(not_ours("a redb file without inflight's tables"));
        }
        Err(e) => return Err(storage_error(path, e.into())),
    };
    let format = meta
        .get(META_FORMAT)
        .map_err(|e| storage_error(path, e.into()))?;
    if format.as_ref().map(|g| g.value()) != Some(FORMAT_NAME) {
        return Err(not_ours("a redb file of another program"));
    }
    let version = meta
        .get(META_SCHEMA_VERSION)
        .map_err(|e| storage_error(path, e.into()))?
        .and_then(|g| g.value().parse::<u64>().ok())
        .ok_or_else(|| LedgerError::Corrupt {
            path: path.to_path_buf(),
            detail: "the schema version is missing or unreadable".into(),
        })?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Opens `path` for writing and checks its schema. On an error the handle
/// is closed before this returns, so nothing writes to the file afterwards.
pub(super) fn open_for_writing(path: &Path, options: &LedgerOptions) -> Result<Database> {
    let Handle::ReadWrite(db) = open_database(path, options, Access::ReadWrite)? else {
        unreachable!("a read-write open returns a read-write handle")
    };
    // Wrapped before anything can fail, so that even a refused file's handle
    // is closed with its panics contained.
    let db = Database {
        handle: Some(Handle::ReadWrite(db)),
        path: path.to_path_buf(),
    };
    contain_panics(path, || {
        let txn = db.begin_read().map_err(|e| storage_error(path, e.into()))?;
        check_schema(path, &txn)
    })?;
    Ok(db)
}

/// The bytes of a ledger file as they were before redb opened it for
/// writing, to put back if the file turns out to be corrupt: a corrupt ledger
/// is reported, never rewritten.
///
/// Only an answer about the file's contents puts the bytes back. Another
/// process may be committing to a healthy file while this one opens it, and
/// a transient failure (an I/O error, a busy lock) must not roll back its
/// commits; a file found corrupt is corrupt for every process.
pub(super) struct FileSnapshot {
    bytes: Vec<u8>,
}

impl FileSnapshot {
    /// Ledgers stay small (events are pruned, open slots are few), so the
    /// copy costs a millisecond or two. A file beyond this is opened without
    /// one rather than doubling a large process's memory.
    const LIMIT: u64 = 64 * 1024 * 1024;

    pub(super) fn take(path: &Path) -> Option<Self> {
        let size = fs::metadata(path).ok()?.len();
        if size > Self::LIMIT {
            tracing::warn!(
                path = %path.display(), size,
                "the ledger is too large to keep a copy while it is opened; \
                 if it turns out corrupt, redb's repair attempt stays in it"
            );
            return None;
        }
        // A file that cannot be read is reported by the open itself.
        fs::read(path).ok().map(|bytes| Self { bytes })
    }

    /// Whether `error` is about the file's contents, so the file is put
    /// back (and the error's "left untouched" holds).
    pub(super) fn restores_after(error: &LedgerError) -> bool {
        matches!(
            error,
            LedgerError::Corrupt { .. }
                | LedgerError::NotALedger { .. }
                | LedgerError::NewerSchema { .. }
        )
    }

    pub(super) fn put_back(&self, path: &Path) -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(&self.bytes)?;
        file.set_len(self.bytes.len() as u64)?;
        file.sync_all()
    }
}

/// Runs `f`, turning a panic into [`LedgerError::Corrupt`]. A damaged file
/// can make the storage engine trip over its own assertions when it reads a
/// page; whatever the file holds, the answer must be an error naming it, not
/// a crashed runner.
pub(super) fn contain_panics<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    containing(f).unwrap_or_else(|_| {
        Err(LedgerError::Corrupt {
            path: path.to_path_buf(),
            detail: "the storage engine failed while reading it".into(),
        })
    })
}

pub(super) fn check_magic(path: &Path) -> Result<()> {
    let io = |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    fs::File::open(path)
        .map_err(io)?
        .take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.is_empty() {
        return Err(LedgerError::NotALedger {
            path: path.to_path_buf(),
            detail: "the file is empty".into(),
        });
    }
    if head != REDB_MAGIC {
        return Err(LedgerError::NotALedger {
            path: path.to_path_buf(),
            detail: "no redb header".into(),
        });
    }
    Ok(())
}

#[derive(Clone, Copy)]
pub(super) enum Access {
    ReadOnly,
    ReadWrite,
}

pub(super) enum Handle {
    ReadOnly(redb::ReadOnlyDatabase),
    ReadWrite(redb::Database),
}

pub(super) fn open_database(
    path: &Path,
    options: &LedgerOptions,
    access: Access,
) -> Result<Handle> {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(options.cache_bytes);
    builder.set_concurrency_mode(match options.sharing {
        SharingMode::MultiProcess => redb::ConcurrencyMode::MultiWriter,
        SharingMode::Exclusive => redb::ConcurrencyMode::ExclusiveWriter,
    });
    // A damaged file can make a storage engine trip over its own assertions;
    // whatever the file holds, opening it must end in an error, not a panic.
    let opened = containing(|| match access {
        Access::ReadOnly => builder.open_read_only(path).map(Handle::ReadOnly),
        Access::ReadWrite => builder.open(path).map(Handle::ReadWrite),
    });
    match opened {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(e)) => Err(storage_error(path, e.into())),
        Err(_) => Err(LedgerError::Corrupt {
            path: path.to_path_buf(),
            detail: "the storage engine could not read it".into(),
        }),
    }
}

/// Creates a new, initialised ledger at `path` without ever exposing a
/// half-made file: it is built under a temporary name in the same folder and
/// hard-linked into place, which fails if anything (a file, a symlink another
/// user planted) already has that name. When two processes race, one link
/// wins and the other opens the winner's file.
pub(super) fn create_new_file(path: &Path) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LedgerError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(&dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ledger".into());
    static NEXT_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{file_name}.{}.{}.new",
        std::process::id(),
        NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        // `create_new` (O_EXCL) refuses an existing name, a planted symlink
        // included, and the mode makes the file private from its first byte.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let db = redb::Builder::new()
            .create(&tmp)
            .map_err(|e| storage_error(&tmp, e.into()))?;
        let txn = db
            .begin_write()
            .map_err(|e| storage_error(&tmp, e.into()))?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| storage_error(&tmp, e.into()))?;
            meta.insert(META_FORMAT, FORMAT_NAME)
                .map_err(|e| storage_error(&tmp, e.into()))?;
            meta.insert(
                META_SCHEMA_VERSION,
                schema::SCHEMA_VERSION.to_string().as_str(),
            )
            .map_err(|e| storage_error(&tmp, e.into()))?;
            // Every table exists from the start, so readers never meet a
            // missing one.
            let e = |e: redb::TableError| storage_error(&tmp, e.into());
            txn.open_table(OPEN_SLOTS).map_err(e)?;
            txn.open_table(EVENTS).map_err(e)?;
            txn.open_table(STARTS).map_err(e)?;
            txn.open_table(ATTEMPTS).map_err(e)?;
            txn.open_table(IMPORTED).map_err(e)?;
        }
        txn.commit().map_err(|e| storage_error(&tmp, e.into()))?;
        drop(db);
        match fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(LedgerError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        // Make the new name durable before anyone relies on the file.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result
}

thread_local! {
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic of the storage engine; while it runs,
/// [`panic_is_contained`] says so, so a panic hook can keep quiet about a
/// panic that becomes an error.
pub(super) fn containing<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    let outer = CONTAINING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(outer));
    result
}

/// Whether a panic now unwinding on this thread is the storage engine's
/// and will be caught and reported as a [`LedgerError`] (a damaged file):
/// a process's panic hook stays silent for it, so the user sees one clean
/// error rather than redb's raw panic text.
pub fn panic_is_contained() -> bool {
    CONTAINING.with(std::cell::Cell::get)
}
