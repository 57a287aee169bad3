//! The simulator against the recordings: for each recorded request, the
//! simulator answers with the same status and the same JSON shape (the same
//! top-level keys with the same JSON types; for lists, the same for the
//! first result).

use std::collections::BTreeMap;
use std::time::Duration;

use plane_sim::{ItemSeed, MemberRole, PlaneSim, SimConfig, SimLabel, SimState};
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

/// The recorded world a recording belongs to: the second recording's
/// project, or the first's (which also holds the recordings made with a
/// wrong project id, and the workspace-level routes).
fn project_of(f: &Fixture) -> &'static str {
    if f.path.contains(SECOND_PROJECT) {
        SECOND_PROJECT
    } else {
        PROJECT
    }
}

fn states_of(list: &Fixture) -> Vec<SimState> {
    list.body["results"]
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
            slug: s["slug"].as_str().unwrap().into(),
        })
        .collect()
}

/// A simulator holding one recorded world: the project, its states, its
/// labels and its work items, with their recorded ids.
async fn recorded_world(
    project: &str,
    deleted: &[String],
    rate_limit: Option<(u32, Duration)>,
) -> PlaneSim {
    let sim = PlaneSim::start(SimConfig {
        project_id: Some(project.into()),
        rate_limit,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let second = project == SECOND_PROJECT;
    let (states, labels) = if second {
        ("list-states-after-recreate", "list-labels-after-create")
    } else {
        ("list-states", "list-labels")
    };
    sim.replace_states(states_of(&fixture(states)));
    // Lists are newest first; the simulator keeps labels oldest first.
    let mut labels: Vec<SimLabel> = fixture(labels).body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| SimLabel {
            id: l["id"].as_str().unwrap().into(),
            name: l["name"].as_str().unwrap().into(),
            color: l["color"].as_str().unwrap().into(),
        })
        .collect();
    labels.reverse();
    let label = labels.last().unwrap().name.clone();
    sim.replace_labels(labels);
    // Every work item id any recording of this project mentions, oldest
    // first so sequence numbers line up (ROCK-1 is the first).
    let mut items: Vec<(String, String, String)> = Vec::new();
    for f in fixtures().iter().filter(|f| project_of(f) == project) {
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
        if segments.len() == 10
            && segments[5] == "projects"
            && segments[7] != "states"
            && segments[7] != "labels"
        {
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

/// What a recording needs of its world besides the recorded state: the
/// second recording deletes the "Review" state (9da7440f) and re-creates it
/// (b0be28a2), and uses a Guest member's key.
fn prepare(sim: &PlaneSim, f: &Fixture) {
    const RECREATED: &str = "b0be28a2-cde0-4e33-936c-dd92326678cb";
    const DELETED: &str = "9da7440f-7bdc-4fb4-a696-1a0b3b8f10e8";
    let mut states = sim.states();
    match f.name.as_str() {
        "delete-state" => {
            let review = states.iter_mut().find(|s| s.id == RECREATED).unwrap();
            review.id = DELETED.into();
            sim.replace_states(states);
        }
        "recreate-state-same-name" => {
            states.retain(|s| s.id != RECREATED);
            sim.replace_states(states);
        }
        name if name.starts_with("guest-") => {
            sim.set_member_role(plane_sim::DEFAULT_API_KEY, MemberRole::Guest)
        }
        _ => {}
    }
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
        let sim =
            recorded_world(project_of(f), &live, Some((limit, Duration::from_secs(60)))).await;
        prepare(&sim, f);
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
        // Where Plane said it, the same content type and the same
        // (relative) redirect target.
        for header in ["content-type", "location"] {
            if let Some(recorded) = f.headers.get(header) {
                assert_eq!(
                    response.headers().get(header).and_then(|v| v.to_str().ok()),
                    Some(recorded.as_str()),
                    "{}: header {header}",
                    f.name
                );
            }
        }
        let text = response.text().await.unwrap();
        if f.body == Value::String(String::new()) {
            assert!(text.is_empty(), "{}: {text}", f.name);
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
