//! Plane's budget, shared by every process that uses a key: the ledger's
//! store as the client's [`plane_client::SharedBudget`], and the client the
//! binaries build with it.

use std::sync::Arc;
use std::time::Duration;

use ledger_core::blocking::may_block;
use ledger_core::{BudgetAnswer, Clock, FleetStore, SystemClock};

/// The ledger's store as Plane's shared request budget: every process
/// using the same store and API key draws from one window (every process
/// of the host with redb, every host with PostgreSQL).
#[derive(Debug)]
pub struct StoreBudget {
    /// Where the budget is kept.
    pub store: Arc<dyn FleetStore>,
    /// Told what the window has left after each take.
    pub metrics: Option<Arc<inflight_metrics::Metrics>>,
}

impl plane_client::SharedBudget for StoreBudget {
    fn take(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> std::result::Result<plane_client::SharedTake, String> {
        // The client calls this on its blocking pool (see SharedBudget).
        let answer = may_block(|| {
            self.store
                .take_budget(key, limit, window, SystemClock.now())
        })
        .map_err(|e| e.to_string())?;
        if let Some(metrics) = &self.metrics {
            let held = match answer {
                BudgetAnswer::Taken { in_window } | BudgetAnswer::Wait { in_window, .. } => {
                    in_window
                }
            };
            metrics.budget_left(i64::from(limit) - i64::from(held));
        }
        match answer {
            BudgetAnswer::Taken { in_window } => Ok(plane_client::SharedTake::Taken { in_window }),
            BudgetAnswer::Wait {
                wait,
                in_window,
                paused,
            } => Ok(plane_client::SharedTake::Wait {
                wait,
                in_window,
                paused,
            }),
        }
    }

    fn pause(&self, key: &str, wait: Duration) -> std::result::Result<(), String> {
        may_block(|| self.store.pause_budget(key, wait, SystemClock.now()))
            .map_err(|e| e.to_string())
    }

    fn note_used(&self, key: &str, used: u32, window: Duration) -> std::result::Result<(), String> {
        let added = may_block(|| {
            self.store
                .note_budget_used(key, used, window, SystemClock.now())
        })
        .map_err(|e| e.to_string())?;
        if added > 0 {
            tracing::info!(
                added,
                used,
                "Plane counts requests of this key from outside the fleet; the shared budget takes them in"
            );
        }
        Ok(())
    }
}

/// The Plane client for `config` (from
/// [`Config::plane_config`](inflight_config::Config::plane_config)), drawing
/// its requests from the budget that `store` keeps for the key, shared
/// with every process using both, and telling `metrics` of each request.
pub fn plane_client(
    config: plane_client::PlaneConfig,
    store: Arc<dyn FleetStore>,
    metrics: &Arc<inflight_metrics::Metrics>,
) -> std::result::Result<plane_client::PlaneClient, plane_client::PlaneError> {
    let budget = StoreBudget {
        store,
        metrics: Some(metrics.clone()),
    };
    Ok(
        plane_client::PlaneClient::with_shared_budget(config, Arc::new(budget))?
            .with_observer(metrics.clone()),
    )
}
