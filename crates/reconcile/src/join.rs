//! Two small future combinators, written here so that the rules depend on no
//! async runtime: a bounded "run these N at a time", and a guard that turns a
//! panic while polling into a value.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::BoxFuture;

/// Runs `start(i)` for every item, at most `limit` at once, and returns the
/// outputs in item order. A future is only created when it is started, so
/// nothing runs early.
pub(crate) fn bounded<I, T, F>(items: Vec<I>, limit: usize, start: F) -> Bounded<I, T, F>
where
    F: FnMut(I) -> BoxFuture<T>,
{
    let results = (0..items.len()).map(|_| None).collect();
    Bounded {
        waiting: items.into_iter().enumerate().collect(),
        running: Vec::new(),
        results,
        limit: limit.max(1),
        start,
    }
}

pub(crate) struct Bounded<I, T, F> {
    waiting: VecDeque<(usize, I)>,
    running: Vec<(usize, BoxFuture<T>)>,
    results: Vec<Option<T>>,
    limit: usize,
    start: F,
}

// Nothing is pinned in place: the running futures are boxed.
impl<I, T, F> Unpin for Bounded<I, T, F> {}

impl<I, T, F> Future for Bounded<I, T, F>
where
    F: FnMut(I) -> BoxFuture<T>,
{
    type Output = Vec<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<T>> {
        let this = self.get_mut();
        loop {
            while this.running.len() < this.limit {
                let Some((index, item)) = this.waiting.pop_front() else {
                    break;
                };
                this.running.push((index, (this.start)(item)));
            }
            let before = this.running.len();
            let mut i = 0;
            while let Some((_, future)) = this.running.get_mut(i) {
                if let Poll::Ready(value) = future.as_mut().poll(cx) {
                    let (index, _) = this.running.swap_remove(i);
                    if let Some(result) = this.results.get_mut(index) {
                        *result = Some(value);
                    }
                } else {
                    i += 1;
                }
            }
            if this.running.is_empty() && this.waiting.is_empty() {
                return Poll::Ready(this.results.iter_mut().filter_map(Option::take).collect());
            }
            // Something finished: start the next ones and poll them at once,
            // rather than waiting for a wake-up that may never come.
            if this.running.len() == before {
                return Poll::Pending;
            }
        }
    }
}

/// Polls `future`, turning a panic into `Err(message)`.
pub(crate) struct CatchUnwind<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
