//! Shared helpers: fixtures for requests and limits, file hashing, and
//! re-invoking this test binary as a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ledger_core::*;

pub const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

pub fn key(backend: &str, task: &str) -> SlotKey {
    SlotKey::new(Backend::new(backend).unwrap(), TaskId::new(task).unwrap())
}

pub fn owner() -> Owner {
    Owner {
        host: "test-host".into(),
        boot_id: "boot-1".into(),
        runner: ProcessIdentity {
            pid: std::process::id(),
            start_time: 1,
        },
        executor: None,
        role: None,
        project: None,
    }
}

pub fn request(backend: &str, task: &str, run: &str) -> AdmitRequest {
    AdmitRequest {
        key: key(backend, task),
        run_id: RunId::new(run).unwrap(),
        owner: owner(),
        lease: Duration::from_secs(60),
    }
}

pub fn limits(max_concurrent: u32) -> Limits {
    Limits {
        global_max_concurrent: None,
        backend: BackendLimits {
            max_concurrent,
            max_per_hour: None,
            max_per_day: None,
        },
    }
}

pub fn admitted(outcome: AdmitOutcome) -> Slot {
    match outcome {
        AdmitOutcome::Admitted(slot) => slot,
        AdmitOutcome::Denied(denial) => panic!("expected an admission, got {denial}"),
    }
}

pub fn denied(outcome: AdmitOutcome) -> Denial {
    match outcome {
        AdmitOutcome::Denied(denial) => denial,
        AdmitOutcome::Admitted(slot) => panic!("expected a denial, got slot {}", slot.key),
    }
}

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
