//! ledger-core's integration tests: real ledger files, real processes.

mod bad_files;
mod children;
mod conformance;
mod crash;
mod files;
mod import;
mod mocks;
mod multiprocess;
mod support;
