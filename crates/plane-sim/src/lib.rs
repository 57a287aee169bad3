//! A Plane-compatible HTTP server for tests and demos.
//!
//! It serves the routes of Plane's REST API v1 that inflight uses, in both
//! route families (`/work-items/` and the older `/issues/`), with the
//! response shapes, error bodies, cursor pagination, API-key checks and
//! per-key rate limiting of a real Plane server, recorded in
//! `crates/plane-client/tests/fixtures/`. On top of that it injects faults on
//! demand ([`Fault`]) and keeps a log of every request it answered, so a test
//! can assert how many lookups a scan made.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use plane_sim::{Fault, FaultRule, PlaneSim, SimConfig};
//!
//! let sim = PlaneSim::start(SimConfig::default()).await?;
//! let task = sim.add_work_item("Rebuild index", "Todo");
//! // The next two requests for that task get a 503.
//! sim.inject(FaultRule::new(Fault::Status(503)).on_path(&task).times(2));
//! println!("Plane at {}, project {}", sim.base_url(), sim.project_id());
//! assert_eq!(sim.state_of(&task).as_deref(), Some("Todo"));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// The project object has more keys than `json!` expands by default.
#![recursion_limit = "256"]

mod faults;
mod server;
mod webhooks;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use faults::{Fault, FaultRule};
pub use webhooks::{SentDelivery, python_json, sign};
pub use world::{SimComment, SimLabel, SimState, SimWorkItem};

use world::World;

/// The API key the simulator accepts unless told otherwise: shaped like a
/// real one (`plane_api_` and 32 hex digits).
pub const DEFAULT_API_KEY: &str = "plane_api_51a1a7e5000000000000000000000000";

/// How the simulator starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The workspace slug.
    pub workspace: String,
    /// The project's id; a fresh UUID when `None`.
    pub project_id: Option<String>,
    /// The project's identifier (`ROCK` in `ROCK-12`).
    pub project_identifier: String,
    /// Keys that are accepted.
    pub api_keys: Vec<String>,
    /// Requests allowed per key within a sliding window; `None` for no
    /// limit. Plane's default is 60 a minute.
    pub rate_limit: Option<(u32, Duration)>,
    /// Behave like Plane before 1.1: no `/work-items/` routes.
    pub old_server: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            workspace: "acme".into(),
            project_id: None,
            project_identifier: "ROCK".into(),
            api_keys: vec![DEFAULT_API_KEY.into()],
            rate_limit: Some((60, Duration::from_secs(60))),
            old_server: false,
        }
    }
}

/// A project member's role, as far as the API routes the client uses care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberRole {
    /// May read and change work items, comment, and manage states and
    /// labels (Plane's Admin and Member roles, as the API sees them).
    #[default]
    Member,
    /// Plane's Guest (role 5): may read work items and comment, but every
    /// change is refused with 403 before throttling, using no quota.
    Guest,
}

/// One request the simulator answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The status answered (0 for a connection cut or a hang).
    pub status: u16,
    /// When it arrived, since the simulator started.
    pub at: Duration,
}

/// Faults, the rate limiter and the request log.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) faults: Vec<FaultRule>,
    pub(crate) log: Vec<RecordedRequest>,
    /// Requests that arrived, answered or not (the log has the answered).
    pub(crate) arrived: Vec<RecordedRequest>,
    /// Webhook deliveries sent.
    pub(crate) sent: Vec<SentDelivery>,
    /// The longest delay before a failed delivery is sent again.
    pub(crate) webhook_retry_within: Duration,
    pub(crate) rate_limit: Option<(u32, Duration)>,
    /// Allowed requests per key, for the sliding window.
    pub(crate) allowed: std::collections::HashMap<String, std::collections::VecDeque<Instant>>,
    pub(crate) api_keys: Vec<String>,
    pub(crate) roles: std::collections::HashMap<String, MemberRole>,
    pub(crate) old_server: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) world: Mutex<World>,
    pub(crate) control: Mutex<Control>,
    pub(crate) started: Instant,
}

impl Shared {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What to create a work item with.
#[derive(Debug, Clone, Default)]
pub struct ItemSeed {
    /// Its id; a fresh UUID when `None`.
    pub id: Option<String>,
    /// Title.
    pub name: String,
    /// State name; the project's default state when `None`.
    pub state: Option<String>,
    /// Label names (created if missing).
    pub labels: Vec<String>,
    /// Creation time; now when `None`.
    pub created_at: Option<SystemTime>,
}

/// A running simulator. Stops when dropped.
#[derive(Debug)]
pub struct PlaneSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// The runtime it was started on, where deliveries of changes made
    /// through the library are sent from.
    runtime: tokio::runtime::Handle,
}

impl Drop for PlaneSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlaneSim {
    /// Starts on an ephemeral loopback port.
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> std::io::Result<Self> {
        let salt = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        let world = World::new(
            &config.workspace,
            config.project_id.as_deref(),
            &config.project_identifier,
            salt,
        );
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            control: Mutex::new(Control {
                faults: Vec::new(),
                log: Vec::new(),
                arrived: Vec::new(),
                sent: Vec::new(),
                webhook_retry_within: webhooks::RETRY_WITHIN,
                rate_limit: config.rate_limit,
                allowed: Default::default(),
                api_keys: config.api_keys,
                roles: Default::default(),
                old_server: config.old_server,
            }),
            started: Instant::now(),
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = server::router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "plane-sim stopped");
            }
        });
        Ok(Self {
            shared,
            addr,
            task,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// `http://127.0.0.1:PORT`: what a client's `base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The workspace slug.
    pub fn workspace(&self) -> String {
        self.shared.world().workspace_slug.clone()
    }

    /// The project's id.
    pub fn project_id(&self) -> String {
        self.shared.world().project_id.clone()
    }

    /// Adds a work item in the state named `state`; returns its id.
    ///
    /// # Panics
    ///
    /// When the project has no such state: a test set-up mistake.
    pub fn add_work_item(&self, name: &str, state: &str) -> String {
        self.add_work_item_with(ItemSeed {
            name: name.into(),
            state: Some(state.into()),
            ..ItemSeed::default()
        })
    }

    /// Adds a work item as `seed` describes; returns its id.
    ///
    /// # Panics
    ///
    /// When the seed names a state the project lacks.
    pub fn add_work_item_with(&self, seed: ItemSeed) -> String {
        let mut world = self.shared.world();
        let state_id = match &seed.state {
            Some(name) => world
                .state_by_name(name)
                .unwrap_or_else(|| panic!("plane-sim: no state named {name:?}"))
                .id
                .clone(),
            None => world.default_state_id(),
        };
        let labels = seed
            .labels
            .iter()
            .map(|name| label_id(&mut world, name))
            .collect();
        let id = seed.id.unwrap_or_else(|| world.new_id());
        let sequence_id = world.items.len() as u64 + 1;
        // Strictly increasing creation times keep "oldest first" well defined
        // even for items added within the same microsecond.
        let created_at = seed.created_at.unwrap_or_else(|| {
            let now = SystemTime::now();
            world
                .items
                .iter()
                .map(|i| i.created_at + Duration::from_micros(1))
                .max()
                .map_or(now, |next| next.max(now))
        });
        world.items.push(SimWorkItem {
            id: id.clone(),
            name: seed.name,
            sequence_id,
            state_id,
            labels,
            priority: "none".into(),
            created_at,
            updated_at: created_at,
            deleted: false,
            archived: false,
        });
        id
    }

    /// Adds another project to the workspace, with no work items; returns
    /// its id. The key may use it, so a client configured with this id by
    /// mistake sees a project that answers and in which every task of the
    /// main project is "not found", as on a real server.
    pub fn add_project(&self) -> String {
        let mut world = self.shared.world();
        let id = world.new_id();
        world.other_projects.push(id.clone());
        id
    }

    /// Adds a label; returns its id.
    pub fn add_label(&self, name: &str) -> String {
        label_id(&mut self.shared.world(), name)
    }

    /// Adds a state, as `POST /states/` does (a fresh id every time, even
    /// for a name that existed before); returns its id.
    pub fn add_state(&self, name: &str, group: &str) -> String {
        self.shared.world().create_state(name, group, "#888888").id
    }

    /// Deletes the state named `name`, as an administrator would in Plane:
    /// refused, as Plane refuses it, for the default state and for a state
    /// that still holds work items. Work items never point at a deleted
    /// state's id again; a state re-created under the same name gets a new
    /// id, as on a real server.
    pub fn delete_state(&self, name: &str) -> Result<(), String> {
        let mut world = self.shared.world();
        let id = world
            .state_by_name(name)
            .map(|s| s.id.clone())
            .ok_or_else(|| format!("no state named {name:?}"))?;
        world.delete_state(&id).map_err(|refusal| match refusal {
            world::StateRefusal::Missing => format!("no state named {name:?}"),
            world::StateRefusal::Refused(why) => why.to_owned(),
        })
    }

    /// Deletes the label named `name`; items lose it. Returns whether it
    /// existed.
    pub fn delete_label(&self, name: &str) -> bool {
        let mut world = self.shared.world();
        let id = world
            .labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.id.clone());
        id.is_some_and(|id| world.delete_label(&id))
    }

    /// Gives `key`'s user this role in the project, as an administrator
    /// changing a member's role would. Every accepted key starts as a
    /// [`MemberRole::Member`].
    pub fn set_member_role(&self, key: &str, role: MemberRole) {
        self.shared.control().roles.insert(key.to_owned(), role);
    }

    /// Replaces the project's labels (ids included), as a fixture recorded
    /// them, oldest first.
    pub fn replace_labels(&self, labels: Vec<SimLabel>) {
        self.shared.world().labels = labels;
    }

    /// Replaces the project's states (ids included), as a fixture recorded
    /// them.
    pub fn replace_states(&self, states: Vec<SimState>) {
        self.shared.world().states = states;
    }

    /// The project's states.
    pub fn states(&self) -> Vec<SimState> {
        self.shared.world().states.clone()
    }

    /// A work item, deleted and archived ones included.
    pub fn work_item(&self, id: &str) -> Option<SimWorkItem> {
        self.shared
            .world()
            .items
            .iter()
            .find(|i| i.id == id)
            .cloned()
    }

    /// Every work item.
    pub fn work_items(&self) -> Vec<SimWorkItem> {
        self.shared.world().items.clone()
    }

    /// A work item's number in the project (`ROCK-12` is 12).
    pub fn sequence_of(&self, id: &str) -> Option<u64> {
        let world = self.shared.world();
        world
            .items
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.sequence_id)
    }

    /// The name of a work item's state.
    pub fn state_of(&self, id: &str) -> Option<String> {
        let world = self.shared.world();
        let item = world.items.iter().find(|i| i.id == id)?;
        world.state(&item.state_id).map(|s| s.name.clone())
    }

    /// Moves a work item to the state named `state`, as a person would in
    /// Plane's UI.
    ///
    /// Registered webhooks get its delivery as Plane sends one.
    pub fn set_state(&self, id: &str, state: &str) -> bool {
        let mut world = self.shared.world();
        let Some(state_id) = world.state_by_name(state).map(|s| s.id.clone()) else {
            return false;
        };
        let Some(item) = world.items.iter_mut().find(|i| i.id == id) else {
            return false;
        };
        let before = item.clone();
        item.state_id = state_id;
        item.updated_at = SystemTime::now();
        let after = item.clone();
        world.changed(&before, &after);
        drop(world);
        webhooks::send_queued(&self.shared, &self.runtime);
        true
    }

    /// Registers a workspace webhook (`issue: true`): every change to a
    /// work item's state, priority or name is POSTed to `url` (http only),
    /// signed with `secret`, as real Plane delivers it. Returns its id.
    pub fn add_webhook(&self, url: &str, secret: &str) -> String {
        let mut world = self.shared.world();
        let id = world.new_id();
        world.webhooks.push(webhooks::SimWebhook {
            id: id.clone(),
            url: url.to_owned(),
            secret: secret.to_owned(),
            active: true,
            failures: 0,
        });
        id
    }

    /// Whether the webhook `id` is active (Plane sets a webhook inactive
    /// after five failed deliveries in a row).
    pub fn webhook_active(&self, id: &str) -> bool {
        self.shared
            .world()
            .webhooks
            .iter()
            .any(|h| h.id == id && h.active)
    }

    /// Enables the webhook `id` again, as an operator does in Plane's
    /// settings. Deliveries of changes made while it was inactive are not
    /// sent.
    pub fn enable_webhook(&self, id: &str) {
        if let Some(hook) = self.shared.world().webhooks.iter_mut().find(|h| h.id == id) {
            hook.active = true;
            hook.failures = 0;
        }
    }

    /// The longest delay before a failed delivery is sent again (Plane: a
    /// random delay of up to 600 s; tests shorten it).
    pub fn set_webhook_retry_within(&self, within: Duration) {
        self.shared.control().webhook_retry_within = within;
    }

    /// The webhook deliveries sent so far, in order.
    pub fn deliveries(&self) -> Vec<SentDelivery> {
        self.shared.control().sent.clone()
    }

    /// Soft-deletes a work item: reads answer 404 from now on.
    pub fn delete_work_item(&self, id: &str) -> bool {
        self.mark(id, |item| item.deleted = true)
    }

    /// Archives a work item: reads answer 404, PATCH still works.
    pub fn archive_work_item(&self, id: &str) -> bool {
        self.mark(id, |item| item.archived = true)
    }

    fn mark(&self, id: &str, change: impl FnOnce(&mut SimWorkItem)) -> bool {
        let mut world = self.shared.world();
        world
            .items
            .iter_mut()
            .find(|i| i.id == id)
            .map(change)
            .is_some()
    }

    /// The comments on a work item, oldest first (HTML).
    pub fn comments(&self, id: &str) -> Vec<String> {
        let world = self.shared.world();
        world
            .comments
            .iter()
            .filter(|c| c.item_id == id)
            .map(|c| c.html.clone())
            .collect()
    }

    /// Adds a fault rule. Rules are checked in the order they were added;
    /// the first that matches a request applies.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.control().faults.push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.control().faults.clear();
    }

    /// Switches the old-server mode (no `/work-items/` routes) on or off.
    pub fn set_old_server(&self, old: bool) {
        self.shared.control().old_server = old;
    }

    /// Changes the rate limit (and forgets what was counted).
    pub fn set_rate_limit(&self, limit: Option<(u32, Duration)>) {
        let mut control = self.shared.control();
        control.rate_limit = limit;
        control.allowed.clear();
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.control().log.clone()
    }

    /// Every request that arrived, in order, whether or not it has been
    /// answered yet (`status` 0): a test sees a request that hangs.
    pub fn requests_arrived(&self) -> Vec<RecordedRequest> {
        self.shared.control().arrived.clone()
    }

    /// The most requests of the log that arrived within any `window`: what
    /// a rate limit over that window saw at its busiest.
    pub fn busiest_window(&self, window: Duration) -> usize {
        let mut times: Vec<Duration> = self.shared.control().log.iter().map(|r| r.at).collect();
        times.sort();
        let mut within = std::collections::VecDeque::new();
        let mut busiest = 0;
        for at in times {
            while within.front().is_some_and(|first| at >= *first + window) {
                within.pop_front();
            }
            within.push_back(at);
            busiest = busiest.max(within.len());
        }
        busiest
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        let mut control = self.shared.control();
        control.log.clear();
        control.arrived.clear();
    }
}

fn label_id(world: &mut World, name: &str) -> String {
    if let Some(label) = world.labels.iter().find(|l| l.name == name) {
        return label.id.clone();
    }
    let id = world.new_id();
    world.labels.push(SimLabel {
        id: id.clone(),
        name: name.into(),
        color: "#00aa00".into(),
    });
    id
}
