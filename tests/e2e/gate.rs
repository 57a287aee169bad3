//! The executor's start gate: an executor runs only once its runner has
//! recorded it, so a runner that dies in between leaves nothing running
//! that its slot does not name.
//!
//! The gate is the real `watcher` binary. A runner that dies closes the
//! gate's pipe exactly as dropping the [`StartGate`] does here: the kernel
//! closes a dead process's descriptors.

use std::path::Path;
use std::time::Duration;

use inflight_e2e::workspace_bin;
use watcher_bin::{Spawner, StartGate};

fn spawner() -> Spawner {
    Spawner::start_with_gate(workspace_bin("watcher")).unwrap()
}

async fn spawn(
    spawner: &Spawner,
    program: &str,
    args: &[&str],
) -> (tokio::process::Child, StartGate) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let command = spawner.command(Path::new(program), &args).unwrap();
    spawner.spawn(command).await.unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn an_executor_waits_at_its_gate_and_never_runs_if_it_is_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let spawner = spawner();
    let (mut child, gate) = spawn(&spawner, "touch", &[marker.to_str().unwrap()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the executor went past its gate"
    );
    assert!(!marker.exists(), "the executor ran before its gate opened");
    drop(gate);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("a closed gate ends its process")
        .unwrap();
    assert_eq!(status.code(), Some(125), "{status:?}");
    assert!(!marker.exists(), "the executor ran behind a closed gate");
}

#[tokio::test(flavor = "current_thread")]
async fn an_opened_gate_becomes_the_executor_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pid");
    let spawner = spawner();
    // The executor writes its own pid (the one the runner recorded must be
    // it) and its argv[0] (the name the configuration gave).
    let script = format!("echo $$ $0 > {}; exit 7", marker.display());
    let (mut child, gate) = spawn(&spawner, "sh", &["-c", &script]).await;
    let recorded = child.id().unwrap();
    gate.open().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "the executor's exit status passes through"
    );
    let written = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(written.trim(), format!("{recorded} sh"));
}

#[tokio::test(flavor = "current_thread")]
async fn the_gate_leaves_no_descriptor_open_in_the_executor() {
    let spawner = spawner();
    // `test -e /proc/self/fd/3` fails when descriptor 3, the gate's, is closed.
    let (mut child, gate) = spawn(&spawner, "test", &["-e", "/proc/self/fd/3"]).await;
    gate.open().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "descriptor 3 leaked into the executor"
    );
}

#[test]
fn a_missing_program_is_an_error_of_the_spawn() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _inside = runtime.enter();
    let spawner = spawner();
    for program in [
        "inflight-no-such-executor",
        "./no/such/executor",
        "/no/such/executor",
        "",
    ] {
        let err = spawner
            .command(Path::new(program), &[])
            .err()
            .unwrap_or_else(|| panic!("{program:?} was accepted"));
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::NotFound,
            "{program:?}: {err}"
        );
    }
}
