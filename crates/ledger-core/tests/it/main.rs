//! ledger-core's integration tests: real ledger files, real processes.

mod bad_files;
mod caps;
mod children;
mod crash;
mod files;
mod finish;
mod import;
mod multiprocess;
mod support;
