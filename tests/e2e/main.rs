//! End-to-end: the real `watcher` and `watchdog` binaries, a real ledger
//! file, and `plane-sim` over loopback HTTP.
//!
//! The binaries are found next to this test binary (`target/<profile>/`);
//! `cargo test --workspace` and `cargo xtask ci` build them.

mod board;
mod browser;
mod budget;
mod crash;
mod fleet;
mod gate;
mod health;
mod hosts;
mod keepers;
mod library;
mod metrics;
mod operator;
mod page;
mod prometheus;
mod real_plane;
mod scan;
mod support;
mod webhooks;
mod window;
