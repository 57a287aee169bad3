//! End-to-end tests of inflight: see `e2e/`. The crate also ships the
//! `e2e-executor` helper the tests run as an executor and the chaos `soak`
//! binary; this library holds what they share.

use std::path::{Path, PathBuf};

/// A binary of the workspace, found next to the running executable: in
/// `target/<profile>/` for a binary, one level up for a test or benchmark
/// (which run from `target/<profile>/deps/`).
///
/// # Panics
///
/// When it is not there: the binaries must be built first
/// (`cargo build --workspace --bins`; `cargo xtask ci` does).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join(name), dir.parent().unwrap_or(dir).join(name)];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!(
            "{name} is missing next to {}: build the binaries first (`cargo build --workspace --bins`; `cargo xtask ci` does)",
            exe.display()
        )
    })
}

/// How many `e2e-executor`s ran at once at most, and how many run now, as
/// they recorded it in `dir/holders`.
pub fn executor_holders(dir: &Path) -> (i64, i64) {
    let text = std::fs::read_to_string(dir.join("holders")).unwrap_or_default();
    let mut parts = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
    let current = parts.next().unwrap_or(0);
    (parts.next().unwrap_or(0), current)
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}
