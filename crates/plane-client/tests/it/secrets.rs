//! The API key never reaches a log line, a `Debug` rendering or an error
//! message, whatever happens.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plane_client::*;
use plane_sim::{Fault, FaultRule, PlaneSim, SimConfig};

use crate::support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_api_key_appears_in_no_log_line_debug_output_or_error() {
    let secret = "plane_api_5ec12e7c0ffee0ddba11deadbeefcafe";
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The process-wide default, not a thread's: tracing caches whether a
    // call site is enabled, and a call site that another test's thread hit
    // first (with no subscriber) would stay silent under a thread-local
    // one. Other tests' lines land here too; the checks below look for
    // this test's own.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let mut rendered = Vec::new();
    let mut task_path = String::new();
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let sim = PlaneSim::start(SimConfig {
                api_keys: vec![secret.into()],
                ..SimConfig::default()
            })
            .await
            .unwrap();
            let task = sim.add_work_item("t", "Todo");
            task_path = sim.project_id();
            let mut config = quick_config(&sim.base_url(), &sim.project_id(), secret);
            config.request_timeout = Duration::from_millis(300);
            config.max_attempts = 2;
            config.max_response_bytes = 64 * 1024;
            rendered.push(format!("{config:?}"));
            let plane = PlaneClient::new(config.clone()).unwrap();
            rendered.push(format!("{plane:?}"));
            let mut outcomes = vec![
                plane.get_work_item(&task).await.map(drop),
                plane.set_state(&task, "Done").await.map(drop),
                plane.post_comment(&task, "<p>x</p>").await.map(drop),
                plane.get_work_item("not-a-uuid").await.map(drop),
                plane
                    .get_work_item("00000000-0000-4000-8000-000000000000")
                    .await
                    .map(drop),
            ];
            for fault in [
                Fault::RateLimited {
                    retry_after_secs: 0,
                },
                Fault::Status(503),
                Fault::Status(500),
                Fault::Hang,
                Fault::Malformed,
                Fault::ConnectionReset,
                Fault::Oversized(1024 * 1024),
                Fault::ProjectForbidden,
            ] {
                sim.inject(FaultRule::new(fault));
                outcomes.push(plane.get_work_item(&task).await.map(drop));
                sim.clear_faults();
            }
            let wrong = PlaneClient::new(quick_config(
                &sim.base_url(),
                &sim.project_id(),
                "plane_api_wrong",
            ))
            .unwrap();
            outcomes.push(wrong.get_work_item(&task).await.map(drop));
            for outcome in outcomes {
                if let Err(e) = outcome {
                    rendered.push(format!("{e}"));
                    rendered.push(format!("{e:?}"));
                }
            }
            assert!(
                rendered.len() > 20,
                "the failures did not happen: {rendered:?}"
            );
        });
    }
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let own = logs
        .lines()
        .filter(|l| l.contains("plane_client") && l.contains(&task_path))
        .count();
    assert!(
        own >= 15,
        "this test's calls were hardly logged ({own} lines): {logs}"
    );
    assert!(!logs.contains(secret), "the key is in the logs");
    for text in &rendered {
        assert!(!text.contains(secret), "the key is in {text}");
    }
}
