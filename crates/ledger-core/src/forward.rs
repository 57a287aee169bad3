//! [`forward_store!`](crate::forward_store) (or one half of it,
//! [`forward_ledger_store!`](crate::forward_ledger_store),
//! [`forward_fleet_store!`](crate::forward_fleet_store)): the contracts for a
//! type that only decides where each call goes, generated from one list of
//! the contracts' methods instead of written out by hand per wrapper.

/// Implements [`LedgerStore`](crate::LedgerStore) and
/// [`FleetStore`](crate::FleetStore) for a type by handing every call to
/// another store: `target` evaluates (with `this` bound to `&self`, inside a
/// function returning [`Result`](crate::Result), so `?` works) to a pointer
/// to it (`&S`, `Arc<S>`, `Box<S>`); `location` to the wrapper's
/// [`location`](crate::LedgerStore::location).
///
/// For wrappers that change nothing but where calls go (a store opened in
/// the background, say); `failed: |this, error| …` sees each error a call
/// returns and returns the one to pass on (to notice a store that must be
/// reopened, say).
///
/// ```
/// use std::sync::Arc;
/// use ledger_core::{Ledger, LedgerStore};
///
/// #[derive(Debug)]
/// struct Shared(Arc<Ledger>);
///
/// ledger_core::forward_store!(Shared, |this| this.0.clone(), location: |this| this.0.location());
///
/// let dir = tempfile::tempdir().unwrap();
/// let shared = Shared(Arc::new(Ledger::open(dir.path().join("l.redb")).unwrap()));
/// assert!(shared.open_slots().unwrap().is_empty());
/// ```
#[macro_export]
macro_rules! forward_store {
    ($ty:ty, |$this:ident| $target:expr, location: |$here:ident| $location:expr $(,)?) => {
        $crate::forward_store!($ty, |$this| $target, location: |$here| $location,
            failed: |_this, error| error);
    };
    ($ty:ty, |$this:ident| $target:expr, location: |$here:ident| $location:expr,
        failed: |$f:ident, $fe:ident| $failed:expr $(,)?) => {
        $crate::forward_ledger_store!($ty, |$this| $target, location: |$here| $location,
            before: |_this, _call| Ok(()),
            after: |_this, _call, _answer| Ok(()),
            failed: |$f, $fe| $failed);
        $crate::forward_fleet_store!($ty, |$this| $target, failed: |$f, $fe| $failed);
    };
}

/// [`forward_store!`]'s half for [`LedgerStore`](crate::LedgerStore) alone.
///
/// It may also watch or refuse calls, for a test's wrapper: `before` runs
/// before each call with `this` and the call's name (`"admit"`, …) and may
/// fail it (`Err` is returned, the call is not made); `after` runs after
/// each call that succeeded, with its answer as `&dyn Any`, and may turn it
/// into an error. `failed` (also [`forward_store!`]'s) sees every error a
/// call returns and returns the one to pass on.
#[macro_export]
macro_rules! forward_ledger_store {
    ($ty:ty, |$this:ident| $target:expr, location: |$here:ident| $location:expr $(,)?) => {
        $crate::forward_ledger_store!($ty, |$this| $target, location: |$here| $location,
            before: |_this, _call| Ok(()),
            after: |_this, _call, _answer| Ok(()));
    };
    ($ty:ty, |$this:ident| $target:expr, location: |$here:ident| $location:expr,
        before: |$b:ident, $bc:ident| $before:expr,
        after: |$a:ident, $ac:ident, $aa:ident| $after:expr $(,)?) => {
        $crate::forward_ledger_store!($ty, |$this| $target, location: |$here| $location,
            before: |$b, $bc| $before,
            after: |$a, $ac, $aa| $after,
            failed: |_this, error| error);
    };
    ($ty:ty, |$this:ident| $target:expr, location: |$here:ident| $location:expr,
        before: |$b:ident, $bc:ident| $before:expr,
        after: |$a:ident, $ac:ident, $aa:ident| $after:expr,
        failed: |$f:ident, $fe:ident| $failed:expr $(,)?) => {
        impl $crate::LedgerStore for $ty {
            fn location(&self) -> String {
                let $here = self;
                $location
            }
            $crate::forward_calls!($crate::LedgerStore, $this, $target,
                |$b, $bc| $before, |$a, $ac, $aa| $after, |$f, $fe| $failed;
                fn admit(request: &$crate::AdmitRequest, limits: &$crate::Limits, now: $crate::Timestamp) -> $crate::AdmitOutcome;
                fn finish(key: &$crate::SlotKey, expected_run: Option<&$crate::RunId>, reason: $crate::FinishReason, now: $crate::Timestamp) -> $crate::FinishOutcome;
                fn renew_lease(key: &$crate::SlotKey, run: &$crate::RunId, lease: std::time::Duration, now: $crate::Timestamp) -> $crate::UpdateOutcome;
                fn renew_leases(runner: &$crate::Owner, lease: std::time::Duration, now: $crate::Timestamp) -> Vec<($crate::SlotKey, $crate::RunId)>;
                fn set_executor(key: &$crate::SlotKey, run: &$crate::RunId, executor: $crate::ExecutorIdentity) -> $crate::UpdateOutcome;
                fn set_holder(key: &$crate::SlotKey, run: &$crate::RunId, holder: &$crate::Owner) -> $crate::UpdateOutcome;
                fn now(local: $crate::Timestamp) -> $crate::Timestamp;
                fn open_slots() -> Vec<$crate::Slot>;
                fn slot(key: &$crate::SlotKey) -> Option<$crate::Slot>;
                fn last_finish(key: &$crate::SlotKey) -> Option<$crate::Event>;
                fn attempts(task: &$crate::TaskId) -> $crate::TaskAttempts;
                fn events_after(after: u64, limit: usize) -> Vec<$crate::Event>;
                fn events_between(from: $crate::Timestamp, to: $crate::Timestamp) -> Vec<$crate::Event>;
                fn task_events(task: &$crate::TaskId, limit: usize) -> Vec<$crate::Event>;
                fn events_before(before: u64, limit: usize) -> Vec<$crate::Event>;
                fn starts_after(backend: &$crate::Backend, since: $crate::Timestamp) -> Vec<$crate::Timestamp>;
                fn prune(now: $crate::Timestamp) -> $crate::PruneReport;
                fn import_usage_json(path: &std::path::Path) -> $crate::ImportReport;
                fn startup_lock(timeout: std::time::Duration) -> Option<$crate::StoreLock>;
            );
        }
    };
}

/// [`forward_store!`]'s half for [`FleetStore`](crate::FleetStore) alone.
#[macro_export]
macro_rules! forward_fleet_store {
    ($ty:ty, |$this:ident| $target:expr $(,)?) => {
        $crate::forward_fleet_store!($ty, |$this| $target, failed: |_this, error| error);
    };
    ($ty:ty, |$this:ident| $target:expr, failed: |$f:ident, $fe:ident| $failed:expr $(,)?) => {
        impl $crate::FleetStore for $ty {
            $crate::forward_calls!($crate::FleetStore, $this, $target,
                |_this, _call| Ok(()), |_this, _call, _answer| Ok(()), |$f, $fe| $failed;
                fn take_budget(key: &str, limit: u32, window: std::time::Duration, now: $crate::Timestamp) -> $crate::BudgetAnswer;
                fn pause_budget(key: &str, wait: std::time::Duration, now: $crate::Timestamp) -> ();
                fn budget_state(key: &str, window: std::time::Duration, now: $crate::Timestamp) -> $crate::BudgetState;
                fn board_look(key: &str, max_age: std::time::Duration, listing_for: std::time::Duration, now: $crate::Timestamp) -> $crate::BoardLook;
                fn hold_listing(key: &str, until: $crate::Timestamp, listing_for: std::time::Duration, now: $crate::Timestamp) -> Option<$crate::Timestamp>;
                fn note_budget_used(key: &str, used: u32, window: std::time::Duration, now: $crate::Timestamp) -> u32;
                fn put_board(key: &str, listed_at: $crate::Timestamp, events_seen: u64, body: &[u8], now: $crate::Timestamp) -> ();
                fn add_board_hint(key: &str, hint: &[u8], now: $crate::Timestamp) -> u64;
                fn board_hints_after(key: &str, after: u64) -> $crate::BoardHints;
            );
        }
    };
}

/// The methods the forwarding macros generate (not for direct use).
#[doc(hidden)]
#[macro_export]
macro_rules! forward_calls {
    ($trait:path, $this:ident, $target:expr,
        |$b:ident, $bc:ident| $before:expr, |$a:ident, $ac:ident, $aa:ident| $after:expr,
        |$f:ident, $fe:ident| $failed:expr;
        $(fn $name:ident($($arg:ident: $argty:ty),*) -> $ret:ty;)*) => {
        $(
            fn $name(&self, $($arg: $argty),*) -> $crate::Result<$ret> {
                let call = || -> $crate::Result<$ret> {
                    {
                        let ($b, $bc): (&Self, &'static str) = (self, stringify!($name));
                        let before: $crate::Result<()> = $before;
                        before?;
                    }
                    let $this = self;
                    let target = $target;
                    let answer = <_ as $trait>::$name(&*target, $($arg),*)?;
                    {
                        let ($a, $ac, $aa): (&Self, &'static str, &dyn std::any::Any) =
                            (self, stringify!($name), &answer);
                        let after: $crate::Result<()> = $after;
                        after?;
                    }
                    Ok(answer)
                };
                call().map_err(|error| {
                    let ($f, $fe): (&Self, $crate::LedgerError) = (self, error);
                    $failed
                })
            }
        )*
    };
}
