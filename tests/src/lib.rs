//! End-to-end tests of inflight: see `e2e/`. This library is empty; the
//! crate ships the `e2e-executor` helper binary the tests run as an
//! executor.
