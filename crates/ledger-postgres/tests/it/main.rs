//! The PostgreSQL store against a real, throwaway PostgreSQL server.

mod conformance;
mod round_trips;
mod shared;
mod support;
