//! The ledger contract, as every store must keep it.

ledger_core::conformance_suite!(crate::support::fresh_store);
