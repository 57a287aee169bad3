//! An async client for [Plane](https://plane.so)'s REST API (v1), built to the
//! API's real behaviour rather than its documentation.
//!
//! - Both route families: `/work-items/` (Plane 1.1 and later) and
//!   `/issues/` (older self-hosted servers answer `Page not found.` on the
//!   newer form); the client finds out which the server speaks.
//! - Lists are followed page by page until `next_page_results` is false.
//! - States and labels are cached; states are resolved by name for PATCH.
//! - Typed errors that keep apart what matters to a reconciler: a deleted
//!   task ([`PlaneError::NotFound`]) is not a wrong URL
//!   ([`PlaneError::RouteNotFound`]), and 401, 403, 429 and 5xx are never
//!   mistaken for either.
//! - The client paces itself from `X-RateLimit-Remaining` /
//!   `X-RateLimit-Reset` and its own count, or draws every request from a
//!   [`SharedBudget`] that every process using the key shares
//!   ([`PlaneClient::with_shared_budget`]); it honours `Retry-After`, retries
//!   502/503/504 and connection failures with jittered exponential backoff,
//!   within a bounded number of attempts and an overall deadline.
//! - Response bodies are capped; the API key never appears in `Debug`, logs
//!   or errors.
//!
//! # Example
//!
//! Against the simulator of the `plane-sim` crate:
//!
//! ```
//! use plane_client::{ApiKey, PlaneClient, PlaneConfig, PlaneError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = plane_sim::PlaneSim::start(plane_sim::SimConfig::default()).await?;
//! let task = sim.add_work_item("Rebuild index", "Todo");
//!
//! let config = PlaneConfig::new(sim.base_url(), "acme", sim.project_id(), ApiKey::new(plane_sim::DEFAULT_API_KEY));
//! let plane = PlaneClient::new(config)?;
//!
//! let item = plane.get_work_item(&task).await?;
//! assert_eq!(item.name, "Rebuild index");
//!
//! plane.set_state(&task, "In Progress").await?;
//! plane.post_comment(&task, "<p>picked up by runner 1</p>").await?;
//!
//! // A task that does not exist is `NotFound`; a malformed id is a route
//! // miss, which says nothing about any task.
//! let gone = plane.get_work_item("00000000-0000-4000-8000-000000000000").await;
//! assert!(matches!(gone, Err(PlaneError::NotFound { .. })));
//! let typo = plane.get_work_item("not-a-uuid").await;
//! assert!(matches!(typo, Err(PlaneError::RouteNotFound { .. })));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// Library code never panics on what a user, a file or a server controls:
// `cargo xtask ci` denies unwrap, expect, indexing and panic here.

mod client;
mod config;
mod error;
mod model;
mod pacing;
pub mod webhook;

pub use client::{PlaneClient, ProjectProbe, RequestObserver, same_name};
pub use config::{ApiKey, PlaneConfig, RateLimit, RouteFamily};
pub use error::PlaneError;
pub use model::{
    Comment, Label, LabelRef, Project, State, StateGroup, StateLite, StateRef, WorkItem,
    parse_timestamp,
};
pub use pacing::{SharedBudget, SharedTake, parse_retry_after};
