//! `ledger-core` as another service uses it: a crate outside the workspace
//! that depends on it alone admits and finishes a slot held by the current
//! process, and the fleet's tools see that holder alive.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const MAIN: &str = r#"//! Admits a slot held by this process, waits for a line on stdin, finishes it.
use std::time::Duration;

use ledger_core::{
    AdmitOutcome, AdmitRequest, Backend, BackendLimits, Clock, FinishReason, Ledger, LedgerStore,
    Limits, Owner, RunId, SlotKey, SystemClock, TaskId,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: scratch LEDGER")?;
    let ledger = Ledger::open(path)?;
    let now = SystemClock.now();
    let key = SlotKey::new(Backend::new("local")?, TaskId::new("scratch-task")?);
    let limits = Limits {
        global_max_concurrent: None,
        backend: BackendLimits { max_concurrent: 2, max_per_hour: None, max_per_day: None },
    };
    let request = AdmitRequest {
        key: key.clone(),
        run_id: RunId::generate(now),
        owner: Owner::current()?,
        lease: Duration::from_secs(60),
    };
    let AdmitOutcome::Admitted(slot) = ledger.admit(&request, &limits, now)? else {
        return Err("denied".into());
    };
    println!("admitted {}", slot.run_id);
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    ledger.finish(&key, Some(&slot.run_id), FinishReason::Completed, SystemClock.now())?;
    println!("finished");
    Ok(())
}
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo(scratch: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .args(["--offline", "--quiet"])
        .current_dir(scratch)
        // Kept between runs: only the first one compiles redb.
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/scratch-ledger-user"),
        )
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_crate_with_ledger_core_alone_admits_a_slot_the_watchdog_sees_alive() {
    let world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    let scratch = world.path("scratch");
    std::fs::create_dir_all(scratch.join("src")).unwrap();
    std::fs::write(
        scratch.join("Cargo.toml"),
        format!(
            "[package]\nname = \"scratch-ledger-user\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nledger-core = {{ path = {:?}, features = [\"process\"] }}\n\n[workspace]\n",
            workspace().join("crates/ledger-core").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(scratch.join("src/main.rs"), MAIN).unwrap();
    // The workspace's versions, so that nothing needs fetching.
    std::fs::copy(workspace().join("Cargo.lock"), scratch.join("Cargo.lock")).unwrap();

    let tree = cargo(&scratch, &["tree", "-e", "normal", "--prefix", "none"]);
    let tree = String::from_utf8_lossy(&tree.stdout);
    for heavy in [
        "tokio",
        "reqwest",
        "axum",
        "hyper",
        "postgres",
        "prometheus-client",
    ] {
        assert!(
            !tree
                .lines()
                .any(|l| l.split_whitespace().next() == Some(heavy)),
            "a user of ledger-core alone builds {heavy}:\n{tree}"
        );
    }
    cargo(&scratch, &["build"]);

    let program = workspace().join("target/scratch-ledger-user/debug/scratch-ledger-user");
    let mut user = Command::new(program)
        .arg(world.path("var/inflight.redb"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(user.stdout.take().unwrap());
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    assert!(line.starts_with("admitted "), "{line}");

    let status = world.watchdog_json(&["status", "--json"]);
    let slots = status["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 1, "{status}");
    assert_eq!(slots[0]["task_id"], "scratch-task");
    assert_eq!(slots[0]["liveness"], "alive", "{status}");
    assert!(
        slots[0]["owner"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{}", user.id())),
        "{status}"
    );

    user.stdin.take().unwrap().write_all(b"\n").unwrap();
    line.clear();
    said.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "finished");
    assert!(user.wait().unwrap().success());
    wait_until(Duration::from_secs(5), "the slot finished", || {
        world.watchdog_json(&["status", "--json"])["slots"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
}
