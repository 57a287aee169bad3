//! The ledger contract, as every store must keep it.

ledger_core::conformance_suite!(crate::support::fresh_store);

/// The same contract through PgBouncer in transaction mode: nothing the
/// store does depends on staying on one server connection between
/// transactions.
mod through_pgbouncer {
    ledger_core::conformance_suite!(crate::support::fresh_store_through_pgbouncer);
}
