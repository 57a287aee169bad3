//! The client and its calls, one method per Plane endpoint; how a request
//! is sent (URLs, pacing, retries, judging the answer) is in `transport`.

mod transport;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::Page;
use crate::pacing::{Pacer, SharedBudget};
use crate::{
    Comment, Label, PlaneConfig, PlaneError, Project, RouteFamily, State, StateGroup, StateLite,
    WorkItem,
};

/// The two route families, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    WorkItems,
    Issues,
}

impl Family {
    fn segment(self) -> &'static str {
        match self {
            Family::WorkItems => "work-items",
            Family::Issues => "issues",
        }
    }
}

/// What probing the project showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectProbe {
    /// Work items in the project's list (archived, intake and deleted items
    /// are not listed).
    pub total_work_items: u64,
}

/// An async client for one Plane project.
///
/// Cheap to share behind an `Arc`; one connection pool serves every call.
#[derive(Debug)]
pub struct PlaneClient {
    http: reqwest::Client,
    config: PlaneConfig,
    base: Url,
    family: Mutex<Option<Family>>,
    states: Cache<State>,
    labels: Cache<Label>,
    pacer: Pacer,
    observer: Option<Arc<dyn RequestObserver>>,
}

/// Told of every request the client sends and how it ended, for metrics:
/// the method, the route with its ids folded (`work-items/{id}`), and the
/// status (`0` when no answer came: a timeout, a refused connection).
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    /// One attempt of one request ended.
    fn observed(&self, method: &str, endpoint: &str, status: u16);
}

/// `path` (`/api/v1/workspaces/W/projects/P/work-items/ID/comments/`) as
/// its route below the project, ids folded: `work-items/{id}/comments`;
/// `project` for the project itself.
pub(crate) fn endpoint_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let below: Vec<&str> = parts
        .iter()
        .skip_while(|p| **p != "projects")
        .skip(2)
        .enumerate()
        .map(|(i, p)| if i % 2 == 1 { "{id}" } else { *p })
        .collect();
    if below.is_empty() {
        "project".to_owned()
    } else {
        below.join("/")
    }
}

/// What a board look reads of each work item. Measured on a real Plane for
/// a 1,000-item page: 167 KB and 1.1 s of server time with these fields,
/// against 765 KB and 2.5 s with every field and `expand=state`. States
/// come as bare ids, resolved from the cached state list.
const LIST_FIELDS: &str = "id,name,state,labels,created_at";

/// What a scan's listing reads of each work item: its state, expanded, so
/// that no state list is needed to name it (and none is spent).
const STATE_FIELDS: &str = "id,name,state,created_at";

/// A project-level list and when it was loaded.
type Cache<T> = Mutex<Option<(Arc<Vec<T>>, Instant)>>;

impl PlaneClient {
    /// A client for `config`'s project, pacing its requests alone (see
    /// [`with_shared_budget`](Self::with_shared_budget) for a fleet).
    pub fn new(config: PlaneConfig) -> Result<Self, PlaneError> {
        Self::build(config, None)
    }

    /// A client for `config`'s project drawing every request from
    /// `budget`, which every process using the same key shares, so that
    /// together they stay inside the key's `rate_limit` and none waits
    /// while the window has room. The budget is kept under the key's
    /// [fingerprint](crate::ApiKey::fingerprint), never the key.
    pub fn with_shared_budget(
        config: PlaneConfig,
        budget: Arc<dyn SharedBudget>,
    ) -> Result<Self, PlaneError> {
        Self::build(config, Some(budget))
    }

    fn build(
        config: PlaneConfig,
        budget: Option<Arc<dyn SharedBudget>>,
    ) -> Result<Self, PlaneError> {
        // rustls needs a crypto provider; ring is the one this workspace
        // builds. Another part of the process may have installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Never follow a redirect: it could carry the key to another
            // host, and Plane's own 301 (a missing trailing slash) would turn
            // a PATCH into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("inflight-plane-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PlaneError::Config(format!("could not build the HTTP client: {e}")))?;
        Self::assemble(config, http, budget)
    }

    /// A client that sends through `http` (for tests, or to share a pool).
    pub fn with_http_client(
        config: PlaneConfig,
        http: reqwest::Client,
    ) -> Result<Self, PlaneError> {
        Self::assemble(config, http, None)
    }

    fn assemble(
        config: PlaneConfig,
        http: reqwest::Client,
        budget: Option<Arc<dyn SharedBudget>>,
    ) -> Result<Self, PlaneError> {
        let base = Url::parse(&config.base_url).map_err(|e| {
            PlaneError::Config(format!("base_url {:?} is not a URL: {e}", config.base_url))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(PlaneError::Config(format!(
                "base_url {:?} must be http or https",
                config.base_url
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(PlaneError::Config(
                "base_url must not carry credentials; the API key goes in its environment variable"
                    .into(),
            ));
        }
        if base.scheme() == "http" && !is_loopback(&base) {
            tracing::warn!(base_url = %base, "Plane is reached over plain http: the API key crosses the network unencrypted");
        }
        if !(1..=1000).contains(&config.page_size) {
            return Err(PlaneError::Config(format!(
                "page_size must be 1..=1000, not {}",
                config.page_size
            )));
        }
        let family = match config.routes {
            RouteFamily::Detect => None,
            RouteFamily::WorkItems => Some(Family::WorkItems),
            RouteFamily::Issues => Some(Family::Issues),
        };
        Ok(Self {
            pacer: match budget {
                Some(budget) => {
                    Pacer::shared(config.rate_limit, budget, config.api_key.fingerprint())
                }
                None => Pacer::new(config.rate_limit),
            },
            http,
            config,
            base,
            family: Mutex::new(family),
            states: Cache::default(),
            labels: Cache::default(),
            observer: None,
        })
    }

    /// Tells `observer` of every request from now on (see
    /// [`RequestObserver`]).
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub(crate) fn observe(&self, method: &str, path: &str, status: u16) {
        if let Some(observer) = &self.observer {
            observer.observed(method, &endpoint_of(path), status);
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &PlaneConfig {
        &self.config
    }

    /// The route family, finding it out with one cheap list request if it is
    /// not known yet. The same request proves the project answers.
    async fn family(&self) -> Result<Family, PlaneError> {
        if let Some(family) = *self.family.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(family);
        }
        self.probe_project().await?;
        self.family
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or_else(|| PlaneError::Config("the route family could not be determined".into()))
    }

    fn remember(&self, family: Family) {
        *self.family.lock().unwrap_or_else(|e| e.into_inner()) = Some(family);
    }

    /// Checks that the project answers and counts its listed work items:
    /// one request (two on a server older than Plane 1.1, whose
    /// `/work-items/` routes do not exist; the client then uses `/issues/`).
    pub async fn probe_project(&self) -> Result<ProjectProbe, PlaneError> {
        let known = *self.family.lock().unwrap_or_else(|e| e.into_inner());
        let first = known.unwrap_or(Family::WorkItems);
        let query = [("per_page", "1".to_owned())];
        let page: Result<Page<Value>, _> = self
            .call(Method::GET, self.url(&[first.segment()], &query), None)
            .await;
        let page = match page {
            Ok(page) => {
                self.remember(first);
                page
            }
            Err(PlaneError::RouteNotFound { .. }) if known.is_none() => {
                let page = match self
                    .call(
                        Method::GET,
                        self.url(&[Family::Issues.segment()], &query),
                        None,
                    )
                    .await
                {
                    Ok(page) => page,
                    // Neither family answers: this is no Plane API at this
                    // address, not an old server.
                    Err(PlaneError::RouteNotFound { .. }) => {
                        return Err(PlaneError::NoPlaneApi {
                            base_url: self.config.base_url.clone(),
                        });
                    }
                    Err(e) => return Err(e),
                };
                tracing::info!(
                    "this Plane server has no /work-items/ routes (older than 1.1); using /issues/"
                );
                self.remember(Family::Issues);
                page
            }
            Err(e) => return Err(e),
        };
        Ok(ProjectProbe {
            total_work_items: page.total_count,
        })
    }

    /// The project.
    pub async fn get_project(&self) -> Result<Project, PlaneError> {
        self.call(Method::GET, self.url(&[], &[]), None).await
    }

    /// One work item, with its state expanded.
    pub async fn get_work_item(&self, id: &str) -> Result<WorkItem, PlaneError> {
        let family = self.family().await?;
        let url = self.url(&[family.segment(), id], &[("expand", "state".to_owned())]);
        self.call(Method::GET, url, None).await
    }

    /// The work item a person calls `ROCK-42` (the project's identifier
    /// and the item's number in it), with its state expanded. A malformed
    /// identifier is [`PlaneError::InvalidIdentifier`]; one of another
    /// project of the workspace is [`PlaneError::NotFound`], as a missing
    /// one is.
    pub async fn get_work_item_by_identifier(
        &self,
        identifier: &str,
    ) -> Result<WorkItem, PlaneError> {
        let well_formed = identifier
            .rsplit_once('-')
            .is_some_and(|(project, number)| {
                !project.is_empty()
                    && project.chars().all(|c| c.is_ascii_alphanumeric())
                    && !number.is_empty()
                    && number.chars().all(|c| c.is_ascii_digit())
            });
        if !well_formed {
            return Err(PlaneError::InvalidIdentifier {
                identifier: identifier.to_owned(),
            });
        }
        let family = self.family().await?;
        let url = self.workspace_url(
            &[family.segment(), identifier],
            &[("expand", "state".to_owned())],
        );
        let path = url.path().to_owned();
        let item: WorkItem = self.call(Method::GET, url, None).await?;
        match &item.project {
            Some(project) if *project != self.config.project_id => {
                Err(PlaneError::NotFound { path })
            }
            _ => Ok(item),
        }
    }

    /// Every work item of the project, with only the fields a board look
    /// reads (id, name, state, labels, creation time; the state as a bare
    /// id, [`StateRef::Id`](crate::StateRef::Id), to resolve from
    /// [`states`](Self::states)), following the cursor until
    /// `next_page_results` is false. Items are deduplicated by
    /// id (pages are offsets, so an item created during the walk can shift
    /// another onto two pages). Newest first, as Plane lists them.
    pub async fn list_work_items(&self) -> Result<Vec<WorkItem>, PlaneError> {
        let family = self.family().await?;
        let items: Vec<WorkItem> = self
            .list_all(&[family.segment()], &[("fields", LIST_FIELDS.to_owned())])
            .await?;
        let mut seen = HashSet::new();
        Ok(items
            .into_iter()
            .filter(|item| seen.insert(item.id.clone()))
            .collect())
    }

    /// Every work item of the project with its state expanded
    /// ([`StateRef::Expanded`](crate::StateRef::Expanded)) and only the
    /// fields that name it: one request a page, and no state list needed.
    /// What a scan lists when it has more tasks to look up than the
    /// project has pages.
    pub async fn list_work_item_states(&self) -> Result<Vec<WorkItem>, PlaneError> {
        let family = self.family().await?;
        let items: Vec<WorkItem> = self
            .list_all(
                &[family.segment()],
                &[
                    ("fields", STATE_FIELDS.to_owned()),
                    ("expand", "state".to_owned()),
                ],
            )
            .await?;
        let mut seen = HashSet::new();
        Ok(items
            .into_iter()
            .filter(|item| seen.insert(item.id.clone()))
            .collect())
    }

    async fn list_all<T: DeserializeOwned>(
        &self,
        tail: &[&str],
        extra: &[(&str, String)],
    ) -> Result<Vec<T>, PlaneError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen_cursors = HashSet::new();
        loop {
            let mut query = vec![("per_page", self.config.page_size.to_string())];
            query.extend(extra.iter().cloned());
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page: Page<T> = self.call(Method::GET, self.url(tail, &query), None).await?;
            all.extend(page.results);
            match page.next_cursor {
                // A server that repeats a cursor would loop forever.
                Some(next) if page.next_page_results && seen_cursors.insert(next.clone()) => {
                    cursor = Some(next)
                }
                _ => return Ok(all),
            }
        }
    }

    /// The project's states, in Plane's order. Cached for
    /// [`PlaneConfig::cache_ttl`]: they rarely change, but an administrator
    /// may delete and re-create one (under the same name, with a new id);
    /// see also [`PlaneClient::refresh_states`].
    pub async fn states(&self) -> Result<Arc<Vec<State>>, PlaneError> {
        self.cached(&self.states, "states", false).await
    }

    /// Reloads the states.
    pub async fn refresh_states(&self) -> Result<Arc<Vec<State>>, PlaneError> {
        self.cached(&self.states, "states", true).await
    }

    /// The project's labels, newest first. Cached for
    /// [`PlaneConfig::cache_ttl`]; see [`PlaneClient::refresh_labels`].
    pub async fn labels(&self) -> Result<Arc<Vec<Label>>, PlaneError> {
        self.cached(&self.labels, "labels", false).await
    }

    /// Reloads the labels.
    pub async fn refresh_labels(&self) -> Result<Arc<Vec<Label>>, PlaneError> {
        self.cached(&self.labels, "labels", true).await
    }

    /// How long ago the labels were loaded (`None`: never).
    pub fn labels_age(&self) -> Option<Duration> {
        self.labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, at)| at.elapsed())
    }

    /// A project-level list kept in `cache`, loaded on first use, when it is
    /// older than the configured time to live, or when `reload` asks. Two
    /// callers racing on a stale cache may both load it; the lists are small
    /// and the result is the same.
    async fn cached<T: DeserializeOwned>(
        &self,
        cache: &Cache<T>,
        route: &str,
        reload: bool,
    ) -> Result<Arc<Vec<T>>, PlaneError> {
        if !reload
            && let Some((list, at)) = cache.lock().unwrap_or_else(|e| e.into_inner()).clone()
            && at.elapsed() < self.config.cache_ttl
        {
            return Ok(list);
        }
        let list = Arc::new(self.list_all::<T>(&[route], &[]).await?);
        *cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((list.clone(), Instant::now()));
        Ok(list)
    }

    /// The state named `name` (trimmed, case-insensitive), reloading the
    /// states once if it is not cached.
    pub async fn state_named(&self, name: &str) -> Result<State, PlaneError> {
        if let Some(state) = find_state(&self.states().await?, name) {
            return Ok(state);
        }
        let states = self.refresh_states().await?;
        find_state(&states, name).ok_or_else(|| unknown_state(name, &states))
    }

    /// Moves a work item to the state named `state_name`. Returns the item
    /// as Plane answers a PATCH: its `state` is the bare id.
    ///
    /// A state deleted and re-created under the same name keeps its name
    /// but not its id, and Plane refuses the old id with
    /// `400 {"state": ["Invalid pk …"]}`: then the states are reloaded once
    /// and the PATCH is sent again with the new id.
    pub async fn set_state(&self, id: &str, state_name: &str) -> Result<WorkItem, PlaneError> {
        let state = self.state_named(state_name).await?;
        let refused = match self.patch_state(id, &state.id).await {
            Err(PlaneError::Rejected {
                status: 400,
                detail,
                path,
            }) if detail.starts_with("state:") => PlaneError::Rejected {
                status: 400,
                detail,
                path,
            },
            other => return other,
        };
        let states = self.refresh_states().await?;
        match find_state(&states, state_name) {
            Some(fresh) if fresh.id != state.id => {
                tracing::info!(state = state_name, old_id = %state.id, new_id = %fresh.id, "the state was re-created in Plane; using its new id");
                self.patch_state(id, &fresh.id).await
            }
            Some(_) => Err(refused),
            None => Err(unknown_state(state_name, &states)),
        }
    }

    async fn patch_state(&self, id: &str, state_id: &str) -> Result<WorkItem, PlaneError> {
        let family = self.family().await?;
        let url = self.url(&[family.segment(), id], &[]);
        self.call(
            Method::PATCH,
            url,
            Some(serde_json::json!({ "state": state_id })),
        )
        .await
    }

    /// Posts a comment (HTML) on a work item.
    pub async fn post_comment(&self, id: &str, html: &str) -> Result<Comment, PlaneError> {
        let family = self.family().await?;
        let url = self.url(&[family.segment(), id, "comments"], &[]);
        self.call(
            Method::POST,
            url,
            Some(serde_json::json!({ "comment_html": html })),
        )
        .await
    }

    /// The comments on a work item, newest first.
    pub async fn list_comments(&self, id: &str) -> Result<Vec<Comment>, PlaneError> {
        let family = self.family().await?;
        self.list_all(&[family.segment(), id, "comments"], &[])
            .await
    }

    /// Whether a state means the task is finished for good: group
    /// `completed` or `cancelled`, or a name configured as terminal.
    pub fn is_terminal(&self, state: &StateLite) -> bool {
        matches!(state.group, StateGroup::Completed | StateGroup::Cancelled)
            || self
                .config
                .terminal_state_names
                .iter()
                .any(|n| same_name(n, &state.name))
    }
}

/// Whether two state or label names are the same as inflight matches them:
/// trimmed and case-insensitively (configurations are typed by people,
/// names in Plane's UI too).
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The state named `name`, trimmed and case-insensitively.
pub(crate) fn find_state(states: &[State], name: &str) -> Option<State> {
    states.iter().find(|s| same_name(&s.name, name)).cloned()
}

fn unknown_state(name: &str, states: &[State]) -> PlaneError {
    PlaneError::UnknownState {
        name: name.to_owned(),
        available: states
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::endpoint_of;

    #[test]
    fn ids_are_folded_out_of_a_route() {
        let p = "/api/v1/workspaces/acme/projects/7a9e/";
        assert_eq!(endpoint_of(p), "project");
        assert_eq!(endpoint_of(&format!("{p}work-items/")), "work-items");
        assert_eq!(
            endpoint_of(&format!("{p}work-items/9704/")),
            "work-items/{id}"
        );
        assert_eq!(
            endpoint_of(&format!("{p}issues/9704/comments/")),
            "issues/{id}/comments"
        );
        assert_eq!(endpoint_of(&format!("{p}states/")), "states");
    }
}
