//! The adapters against a real ledger, the configuration, Plane lookups.

mod adapters;
mod config;
mod lookup;
