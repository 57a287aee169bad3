//! The PostgreSQL store against a real, throwaway PostgreSQL server.

mod conformance;
mod shared;
mod support;
