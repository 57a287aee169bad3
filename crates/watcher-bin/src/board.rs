//! The runner's look at the board: waiting for work (the poll, a webhook's
//! hint), reading the shared snapshot into what it may claim and what sits
//! in its running state, and repairing tasks left there by runs that ended
//! without a report.

use super::*;

/// A repair that Plane refused, and when to try it again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    times: u32,
    retry_at: Instant,
}

/// What one look at the board found.
#[derive(Debug, Default)]
pub(crate) struct Board {
    pub(crate) claimable: Vec<WorkItem>,
    pub(crate) stuck: Vec<WorkItem>,
    /// The ids of the claimable items a webhook named.
    pub(crate) hinted: Vec<String>,
}

/// The longest a refused repair waits before it is tried again.
const MAX_REPAIR_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// How much older than a look's listing a delivery's change may be and
/// still be news: the listing's time is the store's clock, the change's
/// Plane's.
const STALE_HINT_MARGIN: Duration = Duration::from_secs(2);

impl Runner {
    /// Waits for the poll interval, the end of a followed run, or with
    /// webhooks on until a hint names a task in this role's claim state;
    /// true when stopped.
    pub(crate) async fn wait_for_work(
        &self,
        stop: &watch::Receiver<bool>,
        active: &mut JoinSet<WatchEnd>,
        summary: &mut Summary,
    ) -> bool {
        let Some(webhook) = &self.config.webhook else {
            return self.pause(self.poll_interval, stop, active, summary).await == Pause::Stopped;
        };
        let started = Instant::now();
        let interval = |silent: bool| {
            if silent {
                webhook.silent_poll.min(self.poll_interval)
            } else {
                self.poll_interval
            }
        };
        loop {
            let now = Instant::now();
            let until = started + interval(self.silence().is_silent());
            if now >= until {
                return false;
            }
            match self
                .pause(HINT_POLL.min(until - now), stop, active, summary)
                .await
            {
                Pause::Stopped => return true,
                Pause::RunEnded => return false,
                Pause::Elapsed => {}
            }
            let Some(woken) = unless_stopped(stop, self.read_hints()).await else {
                return true;
            };
            if woken {
                return false;
            }
            if let Some(missed) = self.silence().judge(Instant::now()) {
                // The shared snapshot, too, is listed at the faster pace.
                self.board.set_max_age(interval(true));
                tracing::warn!(
                    tasks = ?missed,
                    poll_secs = interval(true).as_secs(),
                    "webhook deliveries are missing: a task entered the claim state and no delivery named it; looking at the board every poll_secs until one arrives (is the webhook still active in Plane?)"
                );
            }
        }
    }

    pub(crate) fn silence(&self) -> std::sync::MutexGuard<'_, Silence> {
        self.silence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the webhook hints that arrived since the last read: any means
    /// deliveries arrive; those about a change older than the last look
    /// (a delivery Plane sent again, minutes late) are dropped unread, the
    /// look saw as much; those naming a task in the claim state are kept
    /// for the next look. Whether any was.
    pub(crate) async fn read_hints(&self) -> bool {
        let (items, last) = self
            .board
            .hints_after(self.last_hint.load(Ordering::Relaxed))
            .await;
        self.last_hint.store(last, Ordering::Relaxed);
        if items.is_empty() {
            return false;
        }
        if self.silence().heard(items.iter().map(|i| i.id.clone())) {
            self.board.set_max_age(self.poll_interval);
            tracing::info!("webhook deliveries arrive again; back to the webhook poll interval");
        }
        let listed = *self.last_listed.lock().unwrap_or_else(|e| e.into_inner());
        let (news, old): (Vec<WorkItem>, Vec<WorkItem>) =
            items
                .into_iter()
                .partition(|item| match (item.updated_at, listed) {
                    (Some(changed), Some(listed)) => changed + STALE_HINT_MARGIN >= listed,
                    _ => true,
                });
        if !old.is_empty() {
            tracing::debug!(
                hints = old.len(),
                "webhook deliveries about changes older than the last look at the board; dropped"
            );
        }
        if news.is_empty() {
            return false;
        }
        self.hinted_claimable(news).await
    }

    /// Keeps the hinted items this role would claim; whether there were any.
    pub(crate) async fn hinted_claimable(&self, items: Vec<WorkItem>) -> bool {
        let wanted = match self.classify(items).await {
            Ok(board) => board.claimable,
            Err(error) => {
                tracing::debug!(%error, "could not read a hinted task's state");
                return false;
            }
        };
        if wanted.is_empty() {
            return false;
        }
        tracing::info!(
            tasks = wanted.len(),
            "a webhook says work is waiting; looking now"
        );
        let mut hinted = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
        for item in wanted {
            hinted.retain(|held| held.id != item.id);
            hinted.push(item);
        }
        true
    }

    /// Puts a hinted item that could not be tried back for the next look.
    pub(crate) fn hint_again(&self, item: WorkItem) {
        let mut hinted = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
        if !hinted.iter().any(|held| held.id == item.id) {
            hinted.push(item);
        }
    }

    /// One look at the board: the tasks in the role's claim state that
    /// carry all its labels, oldest first (one list serves several claims),
    /// and those sitting in its running state. The list is the shared
    /// snapshot (see [`SharedBoard`]): the tasks admitted or finished since
    /// it was listed are left out, as its word on them is stale, and the
    /// tasks a webhook named since are added, to be tried once.
    pub(crate) async fn board(&self) -> Result<Board, PlaneError> {
        // Deliveries that came in since the last read count as heard
        // before this look judges what entered the claim state.
        if self.config.webhook.is_some() {
            self.read_hints().await;
        }
        let view = self.board.look(&*self.plane).await?;
        let listed_at = view.listed_at;
        let hinted = std::mem::take(&mut *self.hinted.lock().unwrap_or_else(|e| e.into_inner()));
        let mut items: Vec<WorkItem> = view
            .items
            .into_iter()
            .filter(|item| {
                TaskId::new(item.id.clone()).is_ok_and(|task| !view.changed.contains(&task))
                    && hinted.iter().all(|h| h.id != item.id)
            })
            .collect();
        let hinted_ids = hinted.iter().map(|h| h.id.clone()).collect();
        items.extend(hinted);
        let mut board = self.classify(items).await?;
        board.hinted = hinted_ids;
        if self.config.webhook.is_some() {
            *self.last_listed.lock().unwrap_or_else(|e| e.into_inner()) = listed_at;
            self.silence().looked(
                board.claimable.iter().map(|item| item.id.clone()),
                Instant::now(),
            );
        }
        Ok(board)
    }

    /// Sorts `items` into the role's claimable (oldest first) and stuck.
    /// For a role waiting for a state or label the project lacked: looks
    /// at the board (the shared snapshot, as every look), and when a task
    /// there carries a label or state id the cached lists lack, lists them
    /// again (at most once per poll interval), so the role resolves without
    /// waiting out `cache_secs`.
    pub(crate) async fn learn_new_names(&self) {
        let Ok(view) = self.board.look(&*self.plane).await else {
            return;
        };
        let due = |age: Option<Duration>| age.is_none_or(|age| age >= self.poll_interval);
        if !self.role.labels.is_empty()
            && let Ok(labels) = self.plane.labels().await
        {
            let unknown = view
                .items
                .iter()
                .flat_map(|item| &item.labels)
                .any(|l| labels.iter().all(|known| known.id != l.id()));
            if unknown && due(self.plane.labels_age()) {
                tracing::info!(
                    "a work item carries a label this runner does not know; listing the labels again"
                );
                let _ = self.plane.refresh_labels().await;
            }
        }
        if let Ok(states) = self.plane.states().await {
            let unknown = view
                .items
                .iter()
                .any(|item| states.iter().all(|known| known.id != item.state.id()));
            if unknown {
                tracing::info!(
                    "a work item is in a state this runner does not know; listing the states again"
                );
                let _ = self.plane.refresh_states().await;
            }
        }
    }

    pub(crate) async fn classify(&self, items: Vec<WorkItem>) -> Result<Board, PlaneError> {
        let wanted_labels: Vec<(String, String)> = if self.role.labels.is_empty() {
            Vec::new()
        } else {
            let mut labels = self.plane.labels().await?;
            // A label id no cached label has means the labels changed (one
            // was deleted and re-created under the same name, say): list
            // them again, at most once per poll interval.
            let unknown = items
                .iter()
                .flat_map(|item| &item.labels)
                .any(|l| labels.iter().all(|known| known.id != l.id()));
            if unknown
                && self
                    .plane
                    .labels_age()
                    .is_none_or(|age| age >= self.poll_interval)
            {
                tracing::info!(
                    "a work item carries a label this runner does not know; listing the labels again"
                );
                labels = self.plane.refresh_labels().await?;
            }
            let mut ids = Vec::new();
            for name in &self.role.labels {
                match labels.iter().find(|l| same_name(&l.name, name)) {
                    Some(label) => ids.push((name.clone(), label.id.clone())),
                    // Gone since the role was checked: the next check says so.
                    None => return Ok(Board::default()),
                }
            }
            ids
        };
        let mut board = Board::default();
        for item in items {
            let state = state_of(&*self.plane, &item).await?;
            let carries = |name: &str| {
                wanted_labels
                    .iter()
                    .filter(|(wanted, _)| wanted == name)
                    .all(|(_, id)| item.labels.iter().any(|l| l.id() == id))
            };
            match role_fit(&self.role, &state.name, carries) {
                RoleFit::Claims => board.claimable.push(item),
                RoleFit::Running => board.stuck.push(item),
                RoleFit::MissingLabels(_) | RoleFit::OtherState => {}
            }
        }
        board.claimable.sort_by_key(|item| item.created_at);
        Ok(board)
    }

    /// Tasks in the running state with no dispatch in flight were left there
    /// by a report that failed (Plane refused the last state change) or by a
    /// runner that died after finishing its slot and before reporting. The
    /// ledger knows how their last run of this role ended: report that.
    ///
    /// A repair that Plane refuses (a demoted key's user may comment but not
    /// move tasks) is tried again after a delay that doubles each time, and
    /// the task says so once; "moved" is written only after Plane moved it.
    pub(crate) async fn repair_stuck(&self, items: &[WorkItem]) {
        // A task that left the running state by other means (a person moved
        // it) needs no more repairs. Only once its retry is due: the board
        // shown may be older than the refusal (a refused report's task has
        // not reached it yet), and forgetting that refusal would announce
        // it a second time.
        let now = Instant::now();
        self.repairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|task, refused| {
                refused.retry_at > now || items.iter().any(|item| item.id == task.as_str())
            });
        let in_flight = |task: &TaskId| {
            let task = task.clone();
            async move {
                match on_store(&self.ledger, |s| s.open_slots()).await {
                    Ok(slots) => Some(slots.iter().any(|s| s.key.task_id == task)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the open slots");
                        None
                    }
                }
            }
        };
        for item in items {
            let Ok(task) = TaskId::new(item.id.clone()) else {
                continue;
            };
            let refused = self.refused(&task);
            if refused.is_some_and(|r| r.retry_at > Instant::now()) {
                continue;
            }
            if in_flight(&task).await != Some(false) {
                continue;
            }
            let key = SlotKey::new(self.backend.name.clone(), task.clone());
            let Ok(Some(last)) = on_store(&self.ledger, move |s| s.last_finish(&key)).await else {
                continue;
            };
            let EventKind::Finished {
                run_id,
                reason,
                role,
                ..
            } = &last.kind
            else {
                continue;
            };
            if role.as_deref() != Some(self.role.name.as_str()) {
                continue;
            }
            // The list may be stale, and another runner may have taken the
            // task since: look again, at Plane and at the ledger.
            let Ok(fresh) = self.plane.get_work_item(task.as_str()).await else {
                continue;
            };
            let Ok(state) = state_of(&*self.plane, &fresh).await else {
                continue;
            };
            if !same_name(&state.name, &self.role.running_state)
                || in_flight(&task).await != Some(false)
            {
                continue;
            }
            // An unreadable count is not zero: leave the task for now.
            let counted = task.clone();
            let lost = match on_store(&self.ledger, move |s| s.attempts(&counted)).await {
                Ok(attempts) => attempts.lost(),
                Err(e) => {
                    tracing::warn!(task = %task, error = %e, "could not read the task's attempts; not repairing it now");
                    continue;
                }
            };
            let target = runtime::destination(reason, lost, &self.role);
            tracing::warn!(task = %task, run = %run_id, %reason, state = %target, "task left in its running state with nothing in flight; reporting its last run");
            let what = format!(
                "inflight: this task was left in {:?} with no dispatch in flight; its last run {run_id} ended: {reason}.",
                self.role.running_state
            );
            match self.plane.set_state(task.as_str(), target).await {
                Ok(_) => {
                    self.repaired(&task);
                    if self.config.watcher.comment.wants(true) {
                        self.comment(&task, &format!("{what} Moved to {target}."), None)
                            .await;
                    }
                }
                Err(e) => {
                    let times = refused.map_or(1, |r| r.times + 1);
                    let wait = self.refused_move(&task, times);
                    tracing::warn!(task = %task, state = %target, error = %e, times, retry_secs = wait.as_secs(), "Plane refused to move a stuck task; trying again later");
                    if times == 1 && self.config.watcher.comment.wants(true) {
                        let text = format!(
                            "{what} Plane refused to move it to {target} ({e}); inflight will try again later."
                        );
                        self.comment(&task, &text, None).await;
                    }
                }
            }
        }
    }

    /// Plane refused to move `task` for the `times`th time: the repair at
    /// the board's next looks waits (doubling from two poll intervals, up
    /// to a limit) and, past the first refusal, says nothing more on the
    /// task. How long it waits.
    pub(crate) fn refused_move(&self, task: &TaskId, times: u32) -> Duration {
        let wait = self
            .poll_interval
            .saturating_mul(2u32.saturating_pow(times.min(16)))
            .min(MAX_REPAIR_BACKOFF.max(self.poll_interval));
        self.repairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                task.clone(),
                Refused {
                    times,
                    retry_at: Instant::now() + wait,
                },
            );
        wait
    }

    pub(crate) fn refused(&self, task: &TaskId) -> Option<Refused> {
        self.repairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(task)
            .copied()
    }

    pub(crate) fn repaired(&self, task: &TaskId) {
        self.repairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(task);
    }
}
