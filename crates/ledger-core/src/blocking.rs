//! Every store call blocks: on a file lock, a disk, a database's answer.
//! Async code must make store calls where blocking is harmless (a blocking
//! pool's thread, a thread of its own), never on the thread that drives
//! its tasks. This module lets an application check that mechanically:
//! it marks the code that may block ([`may_block`]) and installs a check
//! ([`check_each_call`]) that both stores run at the start of every call
//! and open. `runtime` installs one in debug builds that panics on a
//! tokio runtime's thread outside `may_block`, so every test that drives
//! the services finds a stray call.
//!
//! ```
//! use ledger_core::blocking;
//!
//! // Inside `may_block`, a call is marked as one that may block.
//! assert!(!blocking::marked());
//! blocking::may_block(|| assert!(blocking::marked()));
//! ```

use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    static MAY_BLOCK: Cell<bool> = const { Cell::new(false) };
}

static CHECK: OnceLock<fn(&'static str)> = OnceLock::new();

/// Runs `work` marked as code that may block (see [`marked`]); a blocking
/// pool's task wraps its store calls in it.
pub fn may_block<T>(work: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            MAY_BLOCK.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MAY_BLOCK.with(|m| m.replace(true)));
    work()
}

/// Whether this thread runs inside [`may_block`].
pub fn marked() -> bool {
    MAY_BLOCK.with(Cell::get)
}

/// Installs `check`, run by every store at the start of each call and
/// open with the call's name; it may panic. The first install wins (one
/// per process); returns whether this one did.
pub fn check_each_call(check: fn(&'static str)) -> bool {
    CHECK.set(check).is_ok()
}

/// Runs the installed check for the call `what` (stores call this).
pub fn entering(what: &'static str) {
    if let Some(check) = CHECK.get() {
        check(what);
    }
}
