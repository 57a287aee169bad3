//! The HTTP side: one handler that routes the way Plane's Django URL
//! configuration does (a path that matches no route is `Page not found.`,
//! before any authentication), then authenticates, checks permissions,
//! throttles, and answers.

// Helpers return the error response itself as `Err`: it is what the handler
// sends, once, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use futures_util::stream;
use serde_json::{Value, json};

use crate::world::StateRefusal;
use crate::world::{SimComment, SimLabel, SimWorkItem, World, is_uuid};
use crate::{Fault, MemberRole, RecordedRequest, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// What a route resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Project,
    States,
    State(String),
    Labels,
    Label(String),
    Items,
    Item(String),
    Comments(String),
    ByIdentifier(u64),
}

/// A resolved request: which workspace, which project, which route.
struct Resolved {
    slug: String,
    project: Option<String>,
    route: Route,
}

fn page_not_found() -> Response {
    // Django's handler404, not DRF: note the spaces in this body.
    raw(
        StatusCode::NOT_FOUND,
        "application/json",
        r#"{"error": "Page not found."}"#.into(),
    )
}

fn raw(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    raw(status, "application/json", Body::from(value.to_string()))
}

fn object_missing() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": "The requested resource does not exist."}),
    )
}

fn no_permission() -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        &json!({"detail": "You do not have permission to perform this action."}),
    )
}

fn resolve(path: &str, old_server: bool) -> Option<Resolved> {
    let rest = path.strip_prefix("/api/v1/")?.strip_suffix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let family_ok = |f: &str| f == "issues" || (f == "work-items" && !old_server);
    match parts.as_slice() {
        ["workspaces", slug, "projects", project, tail @ ..] if is_uuid(project) => {
            let route = match tail {
                [] => Route::Project,
                ["states"] => Route::States,
                ["states", id] if is_uuid(id) => Route::State((*id).to_owned()),
                ["labels"] => Route::Labels,
                ["labels", id] if is_uuid(id) => Route::Label((*id).to_owned()),
                [family] if family_ok(family) => Route::Items,
                [family, id] if family_ok(family) && is_uuid(id) => Route::Item((*id).to_owned()),
                [family, id, "comments"] if family_ok(family) && is_uuid(id) => {
                    Route::Comments((*id).to_owned())
                }
                _ => return None,
            };
            Some(Resolved {
                slug: (*slug).to_owned(),
                project: Some((*project).to_owned()),
                route,
            })
        }
        ["workspaces", slug, family, ident] if family_ok(family) => {
            let (_, seq) = ident.rsplit_once('-')?;
            Some(Resolved {
                slug: (*slug).to_owned(),
                project: None,
                route: Route::ByIdentifier(seq.parse().ok()?),
            })
        }
        _ => None,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let at = shared.started.elapsed();
    shared.control().arrived.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().map(str::to_owned),
        status: 0,
        at,
    });
    let response = answer(&shared, &method, &uri, &headers, &body).await;
    crate::webhooks::send_queued(&shared, &tokio::runtime::Handle::current());
    shared.control().log.push(RecordedRequest {
        method: method.to_string(),
        path,
        query: uri.query().map(str::to_owned),
        status: response.status().as_u16(),
        at,
    });
    response
}

async fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let path = uri.path();
    // Faults come first: they stand for the network and the proxies in
    // front of Plane.
    let fault = {
        let mut control = shared.control();
        let method = method.as_str();
        control
            .faults
            .iter_mut()
            .find(|r| r.matches(method, path))
            .map(|rule| {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                rule.fault.clone()
            })
    };
    let mut slow_body = None;
    let mut project_forbidden = false;
    match fault {
        Some(Fault::Latency(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Status(500)) => return server_error(),
        Some(Fault::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let page = format!(
                "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
            );
            return raw(status, "text/html", Body::from(page));
        }
        Some(Fault::RateLimited { retry_after_secs }) => return too_many(retry_after_secs),
        Some(Fault::ConnectionReset) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"id\": \"")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated reset",
                )),
            ];
            return raw(
                StatusCode::OK,
                "application/json",
                Body::from_stream(stream::iter(chunks)),
            );
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return page_not_found();
        }
        Some(Fault::Oversized(bytes)) => return oversized(bytes),
        Some(Fault::Malformed) => {
            return raw(
                StatusCode::OK,
                "application/json",
                Body::from(r#"{"id": "16aa1bb4", "name": "trunc"#),
            );
        }
        Some(Fault::SlowBody(delay)) => slow_body = Some(delay),
        Some(Fault::ProjectForbidden) => project_forbidden = true,
        Some(Fault::Json { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return raw(status, "application/json", Body::from(body));
        }
        None => {}
    }

    let (old_server, role) = {
        let control = shared.control();
        let key = api_key(headers);
        (
            control.old_server,
            control.roles.get(key).copied().unwrap_or_default(),
        )
    };
    let Some(resolved) = resolve(path, old_server) else {
        // Django's APPEND_SLASH: a path that would match a route with a
        // slash appended is redirected there (before authentication and
        // the throttle, so it uses no quota), with a relative location
        // that keeps the query; anything else is Page not found.
        let with_slash = format!("{path}/");
        if !path.ends_with('/') && resolve(&with_slash, old_server).is_some() {
            let location = match uri.query() {
                Some(query) => format!("{with_slash}?{query}"),
                None => with_slash,
            };
            let mut response = raw(
                StatusCode::MOVED_PERMANENTLY,
                "text/html; charset=utf-8",
                Body::empty(),
            );
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert("location", location);
            }
            return response;
        }
        return page_not_found();
    };

    // Authentication, then permission, then the throttle: Plane's order, so
    // 401 and 403 never count against the budget.
    let key = api_key(headers);
    if key.is_empty() {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"detail": "Authentication credentials were not provided."}),
        );
    }
    if !shared.control().api_keys.iter().any(|k| k == key) {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"detail": "Given API token is not valid"}),
        );
    }
    let (slug_ok, project_ok, other_project) = {
        let world = shared.world();
        let other = resolved
            .project
            .as_deref()
            .is_some_and(|p| world.other_projects.iter().any(|o| o == p));
        (
            resolved.slug == world.workspace_slug,
            other
                || resolved
                    .project
                    .as_deref()
                    .is_none_or(|p| p == world.project_id),
            other,
        )
    };
    if !slug_ok || (resolved.project.is_some() && project_forbidden) {
        return no_permission();
    }
    // GET on the project itself only needs workspace membership, so an
    // unknown project id there is a 404; every other project route is 403.
    if !project_ok && resolved.route != Route::Project {
        return no_permission();
    }
    // A Guest may read and comment; every other change is refused by the
    // permission check, which runs before the throttle.
    let comment = matches!(resolved.route, Route::Comments(_));
    if role == MemberRole::Guest && method != Method::GET && !comment {
        return no_permission();
    }
    let remaining = match throttle(shared, key) {
        Ok(remaining) => remaining,
        Err(retry_after) => return too_many(retry_after),
    };

    let mut response = if other_project {
        empty_project(shared, uri, &resolved)
    } else if project_ok {
        route(shared, method, uri, &resolved.route, body)
    } else {
        object_missing()
    };
    if let Some((remaining, window)) = remaining {
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() + window.as_secs().max(1))
            .unwrap_or(0);
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    }
    match slow_body {
        Some(delay) => dribble(response, delay).await,
        None => response,
    }
}

fn api_key(headers: &HeaderMap) -> &str {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
}

/// Counts an allowed request in the key's sliding window, or refuses it with
/// the seconds until the oldest counted request leaves the window.
fn throttle(shared: &Shared, key: &str) -> Result<Option<(u32, Duration)>, u64> {
    let mut control = shared.control();
    let Some((limit, window)) = control.rate_limit else {
        return Ok(None);
    };
    let now = Instant::now();
    let allowed = control.allowed.entry(key.to_owned()).or_default();
    while allowed
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        allowed.pop_front();
    }
    if allowed.len() >= limit as usize {
        let oldest = allowed.front().copied().unwrap_or(now);
        let wait = (oldest + window).saturating_duration_since(now);
        // A refused request does not count.
        return Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
    }
    allowed.push_back(now);
    Ok(Some((limit - allowed.len() as u32, window)))
}

fn too_many(retry_after_secs: u64) -> Response {
    let mut response = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"error_code": 5900, "error_message": "RATE_LIMIT_EXCEEDED"}),
    );
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after_secs));
    response
}

fn oversized(bytes: usize) -> Response {
    const CHUNK: usize = 64 * 1024;
    let chunks = stream::unfold(0usize, move |sent| async move {
        if sent >= bytes {
            return None;
        }
        let n = CHUNK.min(bytes - sent);
        let mut chunk = vec![b' '; n];
        if sent == 0 {
            chunk[0] = b'[';
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), sent + n))
    });
    raw(
        StatusCode::OK,
        "application/json",
        Body::from_stream(chunks),
    )
}

async fn dribble(response: Response, delay: Duration) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let pieces: Vec<Bytes> = bytes.chunks(16).map(Bytes::copy_from_slice).collect();
    let chunks = stream::unfold(pieces.into_iter(), move |mut rest| async move {
        let next = rest.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok::<_, std::io::Error>(next), rest))
    });
    Response::from_parts(parts, Body::from_stream(chunks))
}

/// A query parameter, percent-decoded (axum's `Query`, as Django decodes
/// them); the first when it is repeated.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A comma-separated list parameter (`expand=state,labels`).
fn list_param(uri: &Uri, name: &str) -> Vec<String> {
    query_param(uri, name)
        .map(|v| {
            v.split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn expand_list(uri: &Uri) -> Vec<String> {
    list_param(uri, "expand")
}

/// Another project of the workspace, with no work items: it answers like
/// a real project (200 for itself and its empty lists), and every task of
/// the main project is "not found" in it, as in any project but its own.
fn empty_project(shared: &Shared, uri: &Uri, resolved: &Resolved) -> Response {
    let world = shared.world();
    match &resolved.route {
        Route::Project => {
            let mut project = world.render_project();
            if let (Some(obj), Some(id)) = (project.as_object_mut(), &resolved.project) {
                obj.insert("id".into(), Value::String(id.clone()));
            }
            json_response(StatusCode::OK, &project)
        }
        Route::Items | Route::Labels => paginate(uri, Vec::new()),
        Route::States => {
            let states = world.states.iter().map(|s| world.render_state(s)).collect();
            paginate(uri, states)
        }
        _ => object_missing(),
    }
}

/// `fields=a,b`: the names asked for, if any.
fn fields_list(uri: &Uri) -> Vec<String> {
    list_param(uri, "fields")
}

/// Keeps only `fields` of an object (all of them when none are asked for),
/// as Plane's serializers do with `?fields=`.
fn only_fields(value: Value, fields: &[String]) -> Value {
    match value {
        Value::Object(map) if !fields.is_empty() => Value::Object(
            map.into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect(),
        ),
        other => other,
    }
}

fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn server_error() -> Response {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"error": "Something went wrong please try again later"}),
    )
}

fn not_allowed(method: &Method) -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"detail": format!("Method \"{method}\" not allowed.")}),
    )
}

fn decode_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"detail": format!("JSON parse error - {e}")}),
        )
    })
}

fn route(shared: &Shared, method: &Method, uri: &Uri, route: &Route, body: &Bytes) -> Response {
    let expand = expand_list(uri);
    let expand: Vec<&str> = expand.iter().map(String::as_str).collect();
    let mut world = shared.world();
    match (route, method.as_str()) {
        (Route::Project, "GET") => json_response(StatusCode::OK, &world.render_project()),
        (Route::States, "GET") => {
            let mut states = world.states.clone();
            states.sort_by(|a, b| a.sequence.total_cmp(&b.sequence));
            let rendered: Vec<Value> = states.iter().map(|s| world.render_state(s)).collect();
            paginate(uri, rendered)
        }
        (Route::States, "POST") => {
            let value = match decode_body(body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
            let (Some(name), Some(color)) = (text("name"), text("color")) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"name": ["This field is required."], "color": ["This field is required."]}),
                );
            };
            let group = text("group").unwrap_or_else(|| "backlog".into());
            if world.state_by_name(&name).is_some() {
                // Plane's unique (project, name) constraint; this body was
                // not recorded.
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"name": ["State with this name already exists in the project."]}),
                );
            }
            let state = world.create_state(&name, &group, &color);
            // Plane answers a created state with 200, not 201.
            json_response(StatusCode::OK, &world.render_state(&state))
        }
        (Route::State(id), "GET") => match world.state(id) {
            Some(state) => json_response(StatusCode::OK, &world.render_state(state)),
            None => object_missing(),
        },
        (Route::State(id), "DELETE") => match world.delete_state(id) {
            Ok(()) => no_content(),
            Err(StateRefusal::Missing) => object_missing(),
            Err(StateRefusal::Refused(why)) => {
                json_response(StatusCode::BAD_REQUEST, &json!({ "error": why }))
            }
        },
        (Route::Labels, "GET") => {
            // Newest first, as Plane lists labels.
            let rendered: Vec<Value> = world
                .labels
                .iter()
                .rev()
                .map(|l| world.render_label(l))
                .collect();
            paginate(uri, rendered)
        }
        (Route::Label(id), "DELETE") => {
            if world.delete_label(id) {
                no_content()
            } else {
                object_missing()
            }
        }
        (Route::Labels, "POST") => {
            let value = match decode_body(body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let Some(name) = value.get("name").and_then(Value::as_str) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"name": ["This field is required."]}),
                );
            };
            let id = world.new_id();
            let label = SimLabel {
                id,
                name: name.to_owned(),
                color: value
                    .get("color")
                    .and_then(Value::as_str)
                    .unwrap_or("#000000")
                    .to_owned(),
            };
            world.labels.push(label.clone());
            json_response(StatusCode::CREATED, &world.render_label(&label))
        }
        (Route::Items, "GET") => {
            let mut items: Vec<&SimWorkItem> = world
                .items
                .iter()
                .filter(|i| !i.deleted && !i.archived)
                .collect();
            // Plane lists newest first unless `order_by` names another
            // order; an unknown field is a 500 (after the throttle).
            let order = query_param(uri, "order_by").unwrap_or_else(|| "-created_at".into());
            let (descending, field) = match order.strip_prefix('-') {
                Some(field) => (true, field),
                None => (false, order.as_str()),
            };
            match field {
                "created_at" => items.sort_by_key(|i| (i.created_at, i.sequence_id)),
                "updated_at" => items.sort_by_key(|i| (i.updated_at, i.sequence_id)),
                "sequence_id" => items.sort_by_key(|i| i.sequence_id),
                "name" => items.sort_by(|a, b| a.name.cmp(&b.name)),
                _ => return server_error(),
            }
            if descending {
                items.reverse();
            }
            let fields = fields_list(uri);
            let rendered: Vec<Value> = items
                .iter()
                .map(|i| only_fields(world.render_item(i, &expand), &fields))
                .collect();
            paginate(uri, rendered)
        }
        (Route::Items, "POST") => create_item(&mut world, body),
        (Route::Item(id), "GET") => match world.visible(id) {
            Some(item) => json_response(
                StatusCode::OK,
                &only_fields(world.render_item(item, &expand), &fields_list(uri)),
            ),
            None => object_missing(),
        },
        (Route::Item(id), "PATCH") => patch_item(&mut world, id, body),
        (Route::Item(id), "DELETE") => {
            match world.items.iter_mut().find(|i| &i.id == id && !i.deleted) {
                Some(item) => {
                    item.deleted = true;
                    no_content()
                }
                None => object_missing(),
            }
        }
        (Route::Comments(id), "GET") => {
            let mut comments: Vec<&SimComment> =
                world.comments.iter().filter(|c| &c.item_id == id).collect();
            comments.sort_by_key(|c| std::cmp::Reverse(c.created_at));
            let rendered: Vec<Value> = comments
                .iter()
                .map(|c| world.render_comment(c, true))
                .collect();
            paginate(uri, rendered)
        }
        (Route::Comments(id), "POST") => {
            let value = match decode_body(body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            // Plane accepts a comment on a deleted item, and refuses one on
            // an id it never had.
            if !world.items.iter().any(|i| &i.id == id) {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "The payload is not valid"}),
                );
            }
            let Some(html) = value.get("comment_html").and_then(Value::as_str) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"comment_html": ["This field is required."]}),
                );
            };
            let comment = SimComment {
                id: world.new_id(),
                item_id: id.clone(),
                html: html.to_owned(),
                created_at: SystemTime::now(),
            };
            world.comments.push(comment.clone());
            json_response(StatusCode::CREATED, &world.render_comment(&comment, false))
        }
        (Route::ByIdentifier(seq), "GET") => {
            match world
                .items
                .iter()
                .find(|i| i.sequence_id == *seq && !i.deleted && !i.archived)
            {
                Some(item) => json_response(StatusCode::OK, &world.render_item(item, &expand)),
                None => object_missing(),
            }
        }
        _ => not_allowed(method),
    }
}

fn create_item(world: &mut World, body: &Bytes) -> Response {
    let value = match decode_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(name) = value.get("name").and_then(Value::as_str) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"name": ["This field is required."]}),
        );
    };
    let state_id = match value.get("state").and_then(Value::as_str) {
        Some(id) => match check_state(world, id) {
            Ok(id) => id,
            Err(r) => return r,
        },
        None => world.default_state_id(),
    };
    let labels = value
        .get("labels")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let now = SystemTime::now();
    let item = SimWorkItem {
        id: world.new_id(),
        name: name.to_owned(),
        sequence_id: world.items.len() as u64 + 1,
        state_id,
        labels,
        priority: value
            .get("priority")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_owned(),
        created_at: now,
        updated_at: now,
        deleted: false,
        archived: false,
    };
    world.items.push(item.clone());
    json_response(StatusCode::CREATED, &world.render_item(&item, &[]))
}

/// Plane's state validation, with its exact messages.
fn check_state(world: &World, id: &str) -> Result<String, Response> {
    if !is_uuid(id) {
        return Err(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"state": [format!("\u{201c}{id}\u{201d} is not a valid UUID.")]}),
        ));
    }
    match world.state(id) {
        Some(state) => Ok(state.id.clone()),
        None => Err(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"state": [format!("Invalid pk \"{id}\" - object does not exist.")]}),
        )),
    }
}

fn patch_item(world: &mut World, id: &str, body: &Bytes) -> Response {
    let value = match decode_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // PATCH reads through a manager that includes archived items.
    if !world.items.iter().any(|i| i.id == id && !i.deleted) {
        return object_missing();
    }
    let state_id = match value.get("state").and_then(Value::as_str) {
        Some(state) => match check_state(world, state) {
            Ok(id) => Some(id),
            Err(r) => return r,
        },
        None => None,
    };
    let Some(item) = world.items.iter_mut().find(|i| i.id == id) else {
        return object_missing();
    };
    let before = item.clone();
    if let Some(state_id) = state_id {
        item.state_id = state_id;
    }
    if let Some(name) = value.get("name").and_then(Value::as_str) {
        item.name = name.to_owned();
    }
    if let Some(priority) = value.get("priority").and_then(Value::as_str) {
        item.priority = priority.to_owned();
    }
    // Every successful PATCH moves updated_at, even an empty one.
    item.updated_at = SystemTime::now();
    let item = item.clone();
    world.changed(&before, &item);
    json_response(StatusCode::OK, &world.render_item(&item, &[]))
}

/// Plane's offset pagination with its envelope and its errors.
fn paginate(uri: &Uri, all: Vec<Value>) -> Response {
    let bad = |detail: &str| json_response(StatusCode::BAD_REQUEST, &json!({ "detail": detail }));
    let per_page: i64 = match query_param(uri, "per_page") {
        None => 1000,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n > 1000 => return bad("Invalid per_page value. Cannot exceed 1000."),
            // Plane divides by zero here.
            Ok(0) => return server_error(),
            Ok(n) if n > 0 => n,
            _ => return bad("Invalid per_page parameter."),
        },
    };
    let page: i64 = match query_param(uri, "cursor") {
        None => 0,
        Some(raw) => {
            let parts: Vec<&str> = raw.split(':').collect();
            let numbers: Option<Vec<i64>> = parts.iter().map(|p| p.parse().ok()).collect();
            match numbers.as_deref() {
                Some([_, page, _]) if *page < 0 => return bad("Error in parsing"),
                Some([_, page, _]) => *page,
                _ => return bad("Invalid cursor parameter."),
            }
        }
    };
    let total = all.len() as i64;
    let offset = page.saturating_mul(per_page);
    let results: Vec<Value> = all
        .into_iter()
        .skip(offset.max(0) as usize)
        .take(per_page as usize)
        .collect();
    let body = json!({
        "grouped_by": null,
        "sub_grouped_by": null,
        "total_count": total,
        "next_cursor": format!("{per_page}:{}:0", page + 1),
        "prev_cursor": format!("{per_page}:{}:1", page - 1),
        "next_page_results": offset + per_page < total,
        "prev_page_results": page > 0,
        "count": results.len(),
        "total_pages": (total + per_page - 1) / per_page,
        "total_results": total,
        "extra_stats": null,
        "results": results,
    });
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_like_plane_s_url_conf() {
        let p = "7a9e77a8-f88a-4a02-989e-b62a535fbb98";
        let i = "16aa1bb4-a453-47f0-8d02-635a0e02f9ad";
        let r = |path: &str, old| resolve(path, old).map(|r| r.route);
        assert_eq!(
            r(&format!("/api/v1/workspaces/acme/projects/{p}/"), false),
            Some(Route::Project)
        );
        assert_eq!(
            r(
                &format!("/api/v1/workspaces/acme/projects/{p}/work-items/{i}/"),
                false
            ),
            Some(Route::Item(i.into()))
        );
        assert_eq!(
            r(
                &format!("/api/v1/workspaces/acme/projects/{p}/issues/{i}/comments/"),
                false
            ),
            Some(Route::Comments(i.into()))
        );
        assert_eq!(
            r(
                &format!("/api/v1/workspaces/acme/projects/{p}/work-items/{i}/"),
                true
            ),
            None
        );
        assert_eq!(
            r(
                &format!("/api/v1/workspaces/acme/projects/{p}/work-items/not-a-uuid/"),
                false
            ),
            None
        );
        assert_eq!(
            r("/api/v1/workspaces/acme/projects/not-a-uuid/states/", false),
            None
        );
        assert_eq!(
            r("/api/v1/workspaces/acme/work-items/ROCK-12/", false),
            Some(Route::ByIdentifier(12))
        );
        assert_eq!(r("/api/v2/anything/", false), None);
    }
}
