//! Fixtures on disk, a server that replays them, and clients for the
//! simulator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plane_client::{ApiKey, PlaneClient, PlaneConfig};
use plane_sim::{PlaneSim, SimConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One recorded exchange.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub request_body: Option<Value>,
    pub api_key: Option<String>,
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

pub const PLACEHOLDER_KEY: &str = "<PLANE_API_TOKEN>";
pub const PROJECT: &str = "7a9e77a8-f88a-4a02-989e-b62a535fbb98";
/// The project of the second recording (2026-12-01), whose ids differ.
pub const SECOND_PROJECT: &str = "c1541ea4-b8be-406e-822d-ed5198dcec1e";

pub fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut all: Vec<Fixture> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        // Webhook deliveries are recorded in another shape: they are not
        // exchanges the client makes or the simulator answers.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("webhook-"))
        })
        .map(|path| {
            let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let request = &v["request"];
            Fixture {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                method: request["method"].as_str().unwrap().to_owned(),
                path: request["path"].as_str().unwrap().to_owned(),
                query: request["query"]
                    .as_object()
                    .map(|q| {
                        q.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                request_body: request.get("body").cloned(),
                api_key: request["headers"]
                    .get("X-API-Key")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                status: v["status"].as_u64().unwrap() as u16,
                headers: v["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect(),
                body: v["body"].clone(),
            }
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(all.len() >= 60, "fixtures missing from {}", dir.display());
    all
}

pub fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// A tiny HTTP/1.1 server that answers each request with the recorded
/// response of the fixture whose method and path match it, or with
/// `fallback`'s.
pub async fn replay(fallback: Fixture, others: Vec<Fixture>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let table = Arc::new((fallback, others));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let table = table.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and whatever body its Content-Length says.
                let head_end = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut first = head.lines().next().unwrap_or("").split_whitespace();
                let method = first.next().unwrap_or("").to_owned();
                let target = first.next().unwrap_or("");
                let path = target.split('?').next().unwrap_or("");
                let (fallback, others) = &*table;
                let f = others
                    .iter()
                    .find(|f| f.method == method && f.path == path)
                    .unwrap_or(fallback);
                let body = match &f.body {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut response = format!(
                    "HTTP/1.1 {} X\r\nconnection: close\r\ncontent-length: {}\r\n",
                    f.status,
                    body.len()
                );
                for (k, v) in &f.headers {
                    response.push_str(&format!("{k}: {v}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&body);
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A client for `base_url`, quick to give up so that error tests are fast.
pub fn quick_config(base_url: &str, project: &str, key: &str) -> PlaneConfig {
    let mut config = PlaneConfig::new(base_url, "acme", project, ApiKey::new(key));
    config.call_deadline = Duration::from_secs(3);
    config.backoff_base = Duration::from_millis(20);
    config.request_timeout = Duration::from_secs(5);
    config
}

pub async fn sim() -> PlaneSim {
    PlaneSim::start(SimConfig {
        rate_limit: None,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

pub fn client_for(sim: &PlaneSim) -> PlaneClient {
    PlaneClient::new(quick_config(
        &sim.base_url(),
        &sim.project_id(),
        plane_sim::DEFAULT_API_KEY,
    ))
    .unwrap()
}
