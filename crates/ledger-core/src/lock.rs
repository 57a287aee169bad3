//! The reconcile lock: an advisory file lock beside the ledger that lets one
//! process at a time sweep for orphans at start-up.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{LedgerError, Result};

/// An exclusive, advisory lock on `<ledger>.reconcile.lock`. Released when
/// dropped, and by the kernel when its process dies, so a crashed holder
/// never blocks the next start-up.
#[derive(Debug)]
pub struct ReconcileLock {
    lock: fslock::LockFile,
    path: PathBuf,
}

impl ReconcileLock {
    /// The lock file that belongs to the ledger at `ledger_path`.
    pub fn path_for(ledger_path: &Path) -> PathBuf {
        let mut name = ledger_path.as_os_str().to_owned();
        name.push(".reconcile.lock");
        PathBuf::from(name)
    }

    /// Tries to take the lock of the ledger at `ledger_path` for up to
    /// `timeout`. `Ok(None)` means another process holds it.
    pub fn acquire(ledger_path: &Path, timeout: Duration) -> Result<Option<Self>> {
        let path = Self::path_for(ledger_path);
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        // Create the file ourselves, private and without following a planted
        // symlink; fslock would create it world-readable.
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(&path).map_err(io)?;
                if !meta.file_type().is_file() {
                    return Err(LedgerError::Io {
                        path: path.clone(),
                        source: std::io::Error::other("the lock path is not a regular file"),
                    });
                }
            }
            Err(e) => return Err(io(e)),
        }
        let mut lock = fslock::LockFile::open(&path).map_err(io)?;
        let deadline = Instant::now() + timeout;
        loop {
            if lock.try_lock().map_err(io)? {
                return Ok(Some(Self { lock, path }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10).min(timeout));
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReconcileLock {
    fn drop(&mut self) {
        let _ = self.lock.unlock();
    }
}
