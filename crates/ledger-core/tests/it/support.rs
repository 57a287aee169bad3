//! Shared helpers: fixtures for requests and limits, file hashing, and
//! re-invoking this test binary as a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ledger_core::*;

// The fixtures the conformance suite uses, shared rather than written twice.
pub use ledger_core::conformance::{T0, admitted, denied, key, limits, request};

pub fn all_events(ledger: &Ledger) -> Vec<Event> {
    ledger.events_after(0, usize::MAX).unwrap()
}

/// A fingerprint of a file's bytes, to prove that nothing wrote to it.
pub fn file_digest(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (bytes.len() as u64, hash)
}

/// Varied, not secure, numbers; the seed is printed so a failing run can be
/// replayed (`LEDGER_IT_SEED`).
pub fn seeded_rng() -> fastrand::Rng {
    let seed = std::env::var("LEDGER_IT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("random seed: LEDGER_IT_SEED={seed}");
    fastrand::Rng::with_seed(seed)
}

/// A command that re-runs this test binary as the child named `entry` (one
/// of the ignored tests in `children.rs`).
pub fn child(entry: &str, ledger: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        &format!("children::{entry}"),
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env("LEDGER_IT_LEDGER", ledger)
    .stdin(Stdio::null());
    cmd
}

pub fn temp_ledger() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inflight.redb");
    (dir, path)
}
