//! The simulator against the recordings: for each recorded request, the
//! simulator answers with the same status and the same JSON shape (the same
//! top-level keys with the same JSON types; for lists, the same for the
//! first result).

use std::collections::BTreeMap;
use std::time::Duration;

use plane_sim::{ItemSeed, PlaneSim, SimConfig, SimState};
use serde_json::Value;

use crate::support::*;

fn shape(value: &Value) -> BTreeMap<String, &'static str> {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    value
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), kind(v))).collect())
        .unwrap_or_default()
}

/// Keys whose type legitimately varies with the data: a null in one
/// recording may be a value in another (a label's colour, a completion
/// time), so only their presence is compared.
const DATA_DEPENDENT: &[&str] = &[
    "completed_at",
    "updated_by",
    "description",
    "next_cursor",
    "prev_cursor",
    "logo_props",
];

fn same_shape(name: &str, recorded: &Value, simulated: &Value) {
    let (a, b) = (shape(recorded), shape(simulated));
    let keys_a: Vec<_> = a.keys().collect();
    let keys_b: Vec<_> = b.keys().collect();
    assert_eq!(keys_a, keys_b, "{name}: different keys");
    for (key, kind) in &a {
        if !DATA_DEPENDENT.contains(&key.as_str()) && b[key] != "null" && *kind != "null" {
            assert_eq!(*kind, b[key], "{name}: {key} has another type");
        }
    }
    if let (Some(ra), Some(sa)) = (
        recorded["results"].as_array(),
        simulated["results"].as_array(),
    ) && let (Some(r0), Some(s0)) = (ra.first(), sa.first())
    {
        same_shape(&format!("{name} results[0]"), r0, s0);
    }
}

/// A simulator holding the recorded world: the project, its states, its
/// label and its work items, with their recorded ids.
async fn recorded_world(deleted: &[String], rate_limit: Option<(u32, Duration)>) -> PlaneSim {
    let sim = PlaneSim::start(SimConfig {
        project_id: Some(PROJECT.into()),
        rate_limit,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let states = fixture("list-states").body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| SimState {
            id: s["id"].as_str().unwrap().into(),
            name: s["name"].as_str().unwrap().into(),
            group: s["group"].as_str().unwrap().into(),
            color: s["color"].as_str().unwrap().into(),
            sequence: s["sequence"].as_f64().unwrap(),
            default: s["default"].as_bool().unwrap(),
        })
        .collect();
    sim.replace_states(states);
    let label = fixture("list-labels").body["results"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every work item id any recording mentions, oldest first so sequence
    // numbers line up (ROCK-1 is the first).
    let mut items: Vec<(String, String, String)> = Vec::new();
    for f in fixtures() {
        let mut candidates = vec![];
        if let Some(list) = f.body["results"].as_array() {
            candidates.extend(
                list.iter()
                    .filter(|i| i.get("sequence_id").is_some())
                    .cloned(),
            );
        } else if f.body.get("sequence_id").is_some() && !f.name.starts_with("create") {
            candidates.push(f.body.clone());
        }
        for item in candidates {
            let id = item["id"].as_str().unwrap().to_owned();
            if items.iter().all(|(i, _, _)| *i != id) {
                items.push((
                    id,
                    item["name"].as_str().unwrap().into(),
                    item["created_at"].as_str().unwrap().into(),
                ));
            }
        }
        // Items that only appear in a path (the deleted ones).
        let segments: Vec<&str> = f.path.split('/').collect();
        if segments.len() == 10 && segments[5] == "projects" && segments[6] == PROJECT {
            let id = segments[8].to_owned();
            if id.len() == 36
                && items.iter().all(|(i, _, _)| *i != id)
                && !f.name.contains("not-found")
            {
                items.push((id, "deleted item".into(), "2026-11-28T18:02:28.9Z".into()));
            }
        }
    }
    items.sort_by(|a, b| a.2.cmp(&b.2));
    for (id, name, created) in items {
        let labelled = name.contains("Labelled");
        sim.add_work_item_with(ItemSeed {
            id: Some(id.clone()),
            name,
            state: Some("Todo".into()),
            labels: if labelled {
                vec![label.clone()]
            } else {
                vec![]
            },
            created_at: Some(plane_client::parse_timestamp(&created).unwrap()),
        });
        if deleted.contains(&id) {
            sim.delete_work_item(&id);
        }
    }
    sim
}

fn id_in(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_simulator_answers_every_recorded_request_like_plane() {
    let all = fixtures();
    // Items the recordings show as deleted, unless this replay is the one
    // that deletes them.
    let deleted: Vec<String> = all
        .iter()
        .filter(|f| f.name.contains("deleted-work-item"))
        .map(|f| id_in(&f.path))
        .collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut compared = 0;
    for f in &all {
        let rate_limited = f.name.starts_with("rate-limit");
        let live: Vec<String> = if f.status == 204 {
            vec![]
        } else {
            deleted.clone()
        };
        // Plane's real limit, or one request a minute to replay the
        // throttling recordings.
        let limit = if rate_limited { 1 } else { 60 };
        let sim = recorded_world(&live, Some((limit, Duration::from_secs(60)))).await;
        let mut url = reqwest::Url::parse(&format!("{}{}", sim.base_url(), f.path)).unwrap();
        for (k, v) in &f.query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let send = |key: Option<&str>| {
            let mut request = http.request(f.method.parse().unwrap(), url.clone());
            if let Some(key) = key {
                request = request.header("X-API-Key", key);
            }
            if let Some(body) = &f.request_body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            request.send()
        };
        let key = f.api_key.as_deref().map(|k| {
            if k == PLACEHOLDER_KEY {
                plane_sim::DEFAULT_API_KEY
            } else {
                k
            }
        });
        if f.name.starts_with("rate-limited") {
            // Use up the key's budget first.
            send(key).await.unwrap();
        }
        let response = send(key).await.unwrap();
        assert_eq!(response.status().as_u16(), f.status, "{}: status", f.name);
        for header in ["x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"] {
            assert_eq!(
                response.headers().contains_key(header),
                f.headers.contains_key(header),
                "{}: header {header}",
                f.name
            );
        }
        let text = response.text().await.unwrap();
        if f.status == 204 {
            assert!(text.is_empty(), "{}", f.name);
        } else {
            let simulated: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", f.name));
            same_shape(&f.name, &f.body, &simulated);
            if f.status >= 400 {
                assert_eq!(
                    simulated, f.body,
                    "{}: error bodies are Plane's words",
                    f.name
                );
            }
        }
        compared += 1;
    }
    assert_eq!(compared, all.len());
}
