//! Any bytes Plane (or a proxy in front of it) could send: every body type
//! the client decodes, timestamps, and `Retry-After` values. Decoding may
//! fail; it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plane_client::{Comment, Label, Project, State, WorkItem, parse_retry_after, parse_timestamp};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<WorkItem>(data);
    let _ = serde_json::from_slice::<State>(data);
    let _ = serde_json::from_slice::<Label>(data);
    let _ = serde_json::from_slice::<Project>(data);
    let _ = serde_json::from_slice::<Comment>(data);
    if let Ok(page) = serde_json::from_slice::<serde_json::Value>(data)
        && let Some(results) = page.get("results").and_then(|r| r.as_array())
    {
        for item in results {
            let _ = serde_json::from_value::<WorkItem>(item.clone());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_timestamp(text);
        let _ = parse_retry_after(text);
    }
});
