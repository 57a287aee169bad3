//! A runner stays healthy or stops visibly: a full disk under its ledger
//! does not leave it up and doing nothing.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::metrics::{free_port, http, start_runner_with_metrics};
use crate::support::*;

/// A sample's value in a scrape of the runner's metrics.
fn sample(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http(port, "GET", "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Mounts a tmpfs of `size` at `dir`; false where this machine cannot.
fn mount_tmpfs(dir: &std::path::Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Unmounts `dir` when dropped (after the processes using it are gone).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Writes into `path` until the file system is full.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // The last, partial block.
    while file.write_all(&block[..4096]).is_ok() {}
    while file.write_all(&block[..1]).is_ok() {}
}

/// The ledger's disk fills while the runner runs, and is freed again: the
/// runner, refused every write meanwhile (redb refuses every call on its
/// handle after the failed write), opens the ledger again and dispatches
/// the task that waited, within 30 s of the space coming back.
#[test]
fn a_runner_resumes_after_its_ledgers_disk_was_full() {
    let mut world = World::new(2, &[Role::new("goal", "Ready for AI")]);
    world.edit_config(
        "[limits]\nmax_concurrent = 8",
        "[limits]\nmax_concurrent = 3",
    );
    let var = world.path("var");
    if !mount_tmpfs(&var, "8m") {
        eprintln!("skipped: this machine cannot mount a tmpfs (not root?)");
        return;
    }
    let mounted = Mounted(var.clone());
    let first = world
        .sim
        .add_work_item("before the disk fills", "Ready for AI");
    let port = free_port();
    let runner = start_runner_with_metrics(&mut world, port);
    wait_until(Duration::from_secs(30), "the first task done", || {
        world.sim.state_of(&first).as_deref() == Some("Done")
    });

    fill(&var.join("filler"));
    let waiting = world
        .sim
        .add_work_item("while the disk is full", "Ready for AI");
    wait_until(Duration::from_secs(30), "a failed write", || {
        let log = world.log("runner");
        log.contains("No space left") || log.contains("opened again")
    });
    std::thread::sleep(Duration::from_secs(3));
    // Counted, and no progress since the disk filled.
    let failures = sample(port, "inflight_errors_total{what=\"dispatch\"}").unwrap_or(0.0);
    assert!(failures >= 2.0, "{failures} dispatch failures counted");
    // The configured caps are reported as configured, whatever the store.
    assert_eq!(sample(port, "inflight_global_slots_max"), Some(3.0));
    assert_eq!(
        sample(port, "inflight_slots_max{backend=\"local\"}"),
        Some(2.0)
    );
    let last = sample(port, "inflight_runner_last_progress_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - last >= 3.0,
        "progress {:.0} s ago while every dispatch failed",
        now - last
    );
    assert_eq!(
        world.sim.state_of(&waiting).as_deref(),
        Some("Ready for AI"),
        "nothing can be admitted while the disk is full"
    );

    std::fs::remove_file(var.join("filler")).unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(30);
    while world.sim.state_of(&waiting).as_deref() != Some("Done") {
        if Instant::now() > deadline {
            let log = world.log("runner");
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "not dispatched 30 s after the space came back; the runner's log ends:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "dispatching again {:?} after the space came back",
        freed.elapsed()
    );
    assert!(world.log("runner").contains("the ledger is open again"));
    world.signal(runner, libc::SIGTERM);
    assert!(world.wait(runner, Duration::from_secs(10)).is_some());
    inflight_e2e::kill_processes_of(world.path("").as_path());
    drop(mounted);
}
