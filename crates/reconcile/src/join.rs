//! Running futures without an async runtime of the rules' own, through
//! futures-util (combinators only, no runtime): a bounded "run these N at a
//! time", and a guard that turns a panic while polling into a value.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt, stream};

use crate::BoxFuture;

/// Runs `start(item)` for every item, at most `limit` at once, and returns
/// the outputs in item order. A future is only created when it is started,
/// so nothing runs early.
pub(crate) async fn bounded<I, T>(
    items: Vec<I>,
    limit: usize,
    start: impl FnMut(I) -> BoxFuture<T>,
) -> Vec<T> {
    stream::iter(items)
        .map(start)
        .buffered(limit.max(1))
        .collect()
        .await
}

/// Polls `future`, turning a panic into `Err(message)`.
pub(crate) async fn catching_panics<F: Future>(future: F) -> Result<F::Output, String> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(payload.as_ref()))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
