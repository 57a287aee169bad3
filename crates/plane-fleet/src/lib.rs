//! The fleet's Plane coordination: what the runners and the watchdog of
//! every host ask Plane, and what they share so that one API key's small
//! budget (60 requests a minute by default) serves them all.
//!
//! - [`Plane`]: the calls the runner, the watchdog and the orphan rules
//!   make (`plane_client::PlaneClient` implements it; tests bring fakes),
//!   [`PlaneLookup`] (a [`Plane`] as the rules' `TaskLookup`), checking a
//!   role's names against the project ([`check_role`]) and putting
//!   reclaimed tasks back ([`requeue_reclaimed`]);
//! - [`SharedBoard`]: one look at the board per poll interval for every
//!   runner sharing the ledger's store, and webhook hints on it;
//!   [`Silence`]: whether webhook deliveries still arrive, judged from it;
//! - [`StoreBudget`]: the key's budget kept in the store, and
//!   [`plane_client()`], the client drawing from it;
//! - [`on_store`]: store calls on tokio's blocking pool.
//!
//! # Example
//!
//! A board snapshot's hint round-trips through the store's bytes:
//!
//! ```
//! let item: plane_client::WorkItem = serde_json::from_value(serde_json::json!({
//!     "id": "7275f882-b2a0-400c-8000-f882b260680c",
//!     "name": "ROCK-42: fix the flaky test",
//!     "state": "4f3e6a1e-0000-4000-8000-000000000001",
//!     "labels": [],
//!     "created_at": "2026-11-28T10:00:00Z",
//! }))?;
//! let hint = plane_fleet::encode_hint(&item);
//! assert_eq!(plane_fleet::decode_hint(&hint).map(|i| i.id), Some(item.id));
//! # Ok::<(), serde_json::Error>(())
//! ```

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

mod blocking;
mod board;
mod budget;
mod destination;
mod plane;
mod silence;

pub use blocking::on_store;
pub use board::{
    BoardView, SharedBoard, board_key, decode_hint, decode_items, encode_hint, encode_items,
};
pub use budget::{StoreBudget, plane_client};
pub use destination::{RoleFit, destination, role_fit};
pub use plane::{
    Plane, PlaneFuture, PlaneLookup, Requeue, RoleProblem, check_role, html_escape, lookup_error,
    requeue_reclaimed, state_of,
};
pub use silence::{DELIVERY_GRACE, Silence};
