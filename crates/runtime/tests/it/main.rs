//! The adapters against a real ledger, and Plane lookups.

mod adapters;
mod lookup;
