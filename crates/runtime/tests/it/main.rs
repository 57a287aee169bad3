//! The Linux process probe against real processes, and the adapters against
//! a real ledger.

mod adapters;
mod config;
mod lookup;
mod probe;
