//! An executor for the end-to-end tests. It records what the tests need to
//! observe, in files under `E2E_DIR`:
//!
//! - `holders`: how many executors run at once, and the most ever seen
//!   (updated under its own file lock, independently of the ledger);
//! - `pids/<task>.<pid>`: one file per start, holding the pid of a
//!   grandchild it leaves in its process group when `E2E_GRANDCHILD` is set;
//! - `sigterm/<task>`: written when SIGTERM arrives;
//! - `runs/<task>`: a line `<start ms> <end ms> <host>` per attempt that
//!   ended (wall-clock milliseconds; `INFLIGHT_HOST` or `-`), so a test can
//!   tell whether two attempts ever overlapped.
//!
//! Behaviour by task name (`INFLIGHT_TASK_NAME`):
//! - contains `poison`: kills its parent (its keeper) with SIGKILL, then waits;
//! - contains `slow-once`: the first attempt sleeps 60 s, later ones finish;
//! - contains `fail`: exits 3;
//! - contains `crash`: dies by its own SIGKILL;
//! - contains `hang`: sleeps 60 s (past any test timeout);
//! - otherwise sleeps `E2E_SLEEP_MS` (default 300) and exits 0.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

fn bump(dir: &Path, delta: i64) {
    let counter = dir.join("holders");
    let mut lock = fslock::LockFile::open(&dir.join("holders.lock")).expect("lock file");
    lock.lock().expect("lock");
    let text = std::fs::read_to_string(&counter).unwrap_or_default();
    let mut parts = text
        .split_whitespace()
        .map(|n| n.parse::<i64>().unwrap_or(0));
    let current = parts.next().unwrap_or(0) + delta;
    let max = parts.next().unwrap_or(0).max(current);
    std::fs::write(&counter, format!("{current} {max}")).expect("write counter");
    lock.unlock().expect("unlock");
}

fn sleep_unless_terminated(total: Duration) -> bool {
    let step = Duration::from_millis(10);
    let mut slept = Duration::ZERO;
    while slept < total {
        if TERMINATED.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(step);
        slept += step;
    }
    TERMINATED.load(Ordering::SeqCst)
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn record_run(dir: &Path, task: &str, started_ms: u128) {
    use std::io::Write;
    let _ = std::fs::create_dir_all(dir.join("runs"));
    let host = std::env::var("INFLIGHT_HOST").unwrap_or_else(|_| "-".into());
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("runs").join(task))
    {
        let _ = writeln!(file, "{started_ms} {} {host}", unix_ms());
    }
}

fn main() {
    // SAFETY: installs an async-signal-safe handler that only stores a flag.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let dir = PathBuf::from(std::env::var_os("E2E_DIR").expect("E2E_DIR"));
    let task = std::env::var("INFLIGHT_TASK_ID").expect("INFLIGHT_TASK_ID");
    let name = std::env::var("INFLIGHT_TASK_NAME").unwrap_or_default();
    for var in ["INFLIGHT_RUN_ID", "INFLIGHT_BACKEND", "INFLIGHT_ROLE"] {
        assert!(
            std::env::var(var).is_ok_and(|v| !v.is_empty()),
            "{var} is missing"
        );
    }
    let _ = std::fs::create_dir_all(dir.join("pids"));
    let _ = std::fs::create_dir_all(dir.join("sigterm"));
    let _ = std::fs::create_dir_all(dir.join("attempts"));

    let grandchild = if std::env::var_os("E2E_GRANDCHILD").is_some() {
        std::process::Command::new("sleep")
            .arg("120")
            .spawn()
            .ok()
            .map(|c| c.id())
    } else {
        None
    };
    let pid_file = dir
        .join("pids")
        .join(format!("{task}.{}", std::process::id()));
    std::fs::write(
        &pid_file,
        grandchild.map(|p| p.to_string()).unwrap_or_default(),
    )
    .expect("pid file");

    bump(&dir, 1);
    let started_ms = unix_ms();
    let attempt_marker = dir.join("attempts").join(&task);
    let first_attempt = !attempt_marker.exists();
    let _ = std::fs::write(&attempt_marker, b"");
    let sleep = std::env::var("E2E_SLEEP_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (terminated, code) = if name.contains("poison") {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getppid(), libc::SIGKILL);
        }
        (sleep_unless_terminated(Duration::from_secs(60)), 0)
    } else if name.contains("hang") || (name.contains("slow-once") && first_attempt) {
        (sleep_unless_terminated(Duration::from_secs(60)), 0)
    } else if name.contains("crash") {
        bump(&dir, -1);
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        unreachable!("SIGKILL cannot be caught")
    } else if name.contains("fail") {
        println!("e2e-executor: working on {name}");
        eprintln!("e2e-executor: \u{1b}[31msomething went wrong\u{1b}[0m");
        (sleep_unless_terminated(Duration::from_millis(sleep)), 3)
    } else {
        (sleep_unless_terminated(Duration::from_millis(sleep)), 0)
    };
    bump(&dir, -1);
    record_run(&dir, &task, started_ms);
    if terminated {
        let _ = std::fs::write(dir.join("sigterm").join(&task), b"SIGTERM");
        std::process::exit(143);
    }
    std::process::exit(code);
}
