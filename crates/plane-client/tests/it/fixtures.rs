//! The client against every recorded exchange of a real Plane server: each
//! 2xx body decodes, and each error maps to the typed error it means.

use std::time::Duration;

use plane_client::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::support::*;

fn decode_as<T: DeserializeOwned>(f: &Fixture, value: &Value) {
    if let Err(e) = serde_json::from_value::<T>(value.clone()) {
        panic!("{}: {e}\n{value}", f.name);
    }
}

fn decode_one(f: &Fixture, value: &Value) {
    let p = &f.path;
    if p.ends_with("/comments/") {
        decode_as::<Comment>(f, value)
    } else if p.ends_with("/states/") {
        decode_as::<State>(f, value)
    } else if p.ends_with("/labels/") {
        decode_as::<Label>(f, value)
    } else if p.ends_with(&format!("/projects/{PROJECT}/"))
        || p.ends_with(&format!("/projects/{SECOND_PROJECT}/"))
    {
        decode_as::<Project>(f, value)
    } else {
        decode_as::<WorkItem>(f, value)
    }
}

#[test]
fn every_recorded_success_body_decodes() {
    let mut decoded = 0;
    for f in fixtures()
        .into_iter()
        .filter(|f| (200..300).contains(&f.status))
    {
        match &f.body {
            Value::Object(obj) if obj.contains_key("results") => {
                for item in obj["results"].as_array().unwrap() {
                    decode_one(&f, item);
                }
            }
            Value::Object(_) => decode_one(&f, &f.body),
            // A 204 has no body.
            Value::String(s) => assert!(s.is_empty() && f.status == 204, "{}", f.name),
            other => panic!("{}: unexpected body {other}", f.name),
        }
        decoded += 1;
    }
    assert!(
        decoded >= 25,
        "only {decoded} success fixtures: is tests/fixtures complete?"
    );
}

#[test]
fn expanded_and_plain_states_decode_to_the_same_id() {
    let plain: WorkItem = serde_json::from_value(fixture("get-work-item").body).unwrap();
    let expanded: WorkItem =
        serde_json::from_value(fixture("get-work-item-expand-state").body).unwrap();
    assert_eq!(plain.state.id(), expanded.state.id());
    assert!(matches!(plain.state, StateRef::Id(_)));
    match expanded.state {
        StateRef::Expanded(s) => assert_eq!(s.group, StateGroup::Unstarted),
        other => panic!("{other:?}"),
    }
    let labelled: WorkItem =
        serde_json::from_value(fixture("get-work-item-expand-state-labels").body).unwrap();
    assert!(matches!(labelled.labels[0], LabelRef::Expanded { .. }));
}

/// What the client should make of a recorded answer.
fn expected(f: &Fixture) -> Result<(), &'static str> {
    match f.status {
        200..=299 => Ok(()),
        401 => Err("Unauthorized"),
        403 => Err("Forbidden"),
        404 if f.body["error"] == "Page not found." => Err("RouteNotFound"),
        404 => Err("NotFound"),
        429 => Err("RateLimited"),
        // A redirect is refused, never followed.
        300..=400 => Err("Rejected"),
        500..=599 => Err("Server"),
        _ => Err("unexpected"),
    }
}

fn kind(e: &PlaneError) -> &'static str {
    match e {
        PlaneError::NotFound { .. } => "NotFound",
        PlaneError::RouteNotFound { .. } => "RouteNotFound",
        PlaneError::Unauthorized { .. } => "Unauthorized",
        PlaneError::Forbidden { .. } => "Forbidden",
        PlaneError::RateLimited { .. } => "RateLimited",
        PlaneError::Rejected { .. } => "Rejected",
        PlaneError::Server { .. } => "Server",
        _ => "other",
    }
}

/// Replays each exchange the client can make over HTTP and checks its
/// verdict. Exchanges the client never makes (creating items and labels,
/// deleting, looking up by identifier) are covered by the decoding test.
#[tokio::test]
async fn every_recorded_exchange_maps_to_the_right_outcome() {
    let states = fixture("list-states");
    let mut checked = 0;
    for f in fixtures() {
        let segments: Vec<&str> = f.path.trim_end_matches('/').split('/').collect();
        let family = if f.path.contains("/issues/") {
            RouteFamily::Issues
        } else {
            RouteFamily::WorkItems
        };
        let project = segments.get(6).copied().unwrap_or(PROJECT);
        let base = replay(f.clone(), vec![states.clone()]).await;
        let mut config = quick_config(&base, project, "plane_api_fixture");
        config.routes = family;
        let client = PlaneClient::new(config).unwrap();
        if segments.get(5) != Some(&"projects") {
            // Workspace-level routes (by identifier) are not client calls.
            continue;
        }
        let tail: Vec<&str> = segments.iter().skip(7).copied().collect();
        let outcome: Result<(), PlaneError> = match (f.method.as_str(), tail.as_slice()) {
            ("GET", [_, id]) => client.get_work_item(id).await.map(drop),
            ("GET", ["work-items" | "issues"]) => client.list_work_items().await.map(drop),
            ("GET", ["states"]) => client.states().await.map(drop),
            ("GET", ["labels"]) => client.labels().await.map(drop),
            ("GET", []) => client.get_project().await.map(drop),
            ("GET", [_, id, "comments"]) => client.list_comments(id).await.map(drop),
            ("PATCH", [_, id]) => client.set_state(id, "Done").await.map(drop),
            ("POST", [_, id, "comments"]) => client.post_comment(id, "<p>x</p>").await.map(drop),
            _ => continue,
        };
        match (expected(&f), &outcome) {
            (Ok(()), Ok(())) => {}
            (Err(want), Err(got)) if kind(got) == want => {
                if let PlaneError::RateLimited { retry_after, .. } = got {
                    let header: u64 = f.headers["retry-after"].parse().unwrap();
                    assert_eq!(
                        *retry_after,
                        Some(Duration::from_secs(header)),
                        "{}",
                        f.name
                    );
                }
            }
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", f.name),
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} exchanges replayed");
}

/// A redirect is never followed: it could carry the key to another host.
#[tokio::test]
async fn a_redirect_is_refused_not_followed() {
    // The place the redirect points at, counting what reaches it.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/steal/", elsewhere.local_addr().unwrap());
    let mut redirect = fixture("get-work-item");
    redirect.status = 302;
    redirect.headers.insert("location".into(), target.clone());
    redirect.body = serde_json::Value::String(String::new());
    let base = replay(redirect, vec![]).await;
    let mut config = quick_config(&base, PROJECT, "plane_api_secret_for_redirect");
    config.routes = RouteFamily::WorkItems;
    let client = PlaneClient::new(config).unwrap();
    match client
        .get_work_item("16aa1bb4-a453-47f0-8d02-635a0e02f9ad")
        .await
    {
        Err(PlaneError::Rejected {
            status: 302,
            detail,
            ..
        }) => assert!(detail.contains(&target), "{detail}"),
        other => panic!("{other:?}"),
    }
    let accepted = tokio::time::timeout(Duration::from_millis(200), elsewhere.accept()).await;
    assert!(accepted.is_err(), "the client followed the redirect");
}
