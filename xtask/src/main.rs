//! inflight's build tool. `cargo xtask <command>`; see `cargo xtask help`.
//!
//! Every check CI runs lives here, so a developer can run exactly what CI
//! runs with one command, and CI's script stays one line.

mod bench;
mod demo;
mod dist;
mod plot;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  ci              every check CI runs: rustfmt, clippy (warnings denied; no
                  unwrap, expect, indexing or panic in library code), the
                  whole test suite, rustdoc (warnings denied), the crate
                  dependency boundaries of docs/ARCHITECTURE.md, and the store
                  seam (the binaries and runtime name no redb type)
  bench [--against REV [--rounds N]] [NAME]
                  run the benchmarks (ledger, reconcile, window, e2e, fleet and fleet-pg,
                  200 runners through PgBouncer on one PostgreSQL; or the one
                  NAME, which may also be budget: about 25 minutes, so only when
                  named) and write the figures to target/bench-report.md; with --against, also REV's (checked
                  out under target/bench-against), N rounds each (default 2), alternating,
                  each measure side by side with the ratio of the means
  demo [--postgres]
                  run two runners and the watchdog against the Plane simulator,
                  restart a runner mid-dispatch as a deploy would (its executors
                  carry on and are adopted), crash a runner and a keeper, and
                  print what was handed over, adopted and reclaimed, and how
                  fast; with --postgres, two hosts sharing one cap on a
                  throwaway PostgreSQL, one killed whole, the other reclaiming
                  its slots once their lease ran out
  dist [--verify] build the release binaries and write target/dist/inflight_VERSION_ARCH.deb
                  and a tarball of the same files (binaries, manual pages, bash/zsh/fish
                  completions, systemd units, an example /etc/inflight/inflight.toml);
                  checks the .deb with lintian when it is installed (no warning allowed);
                  with --verify, installs it with dpkg --root into a scratch root and
                  checks the files, the user, that no unit is enabled, --version
  soak [--minutes N] [--seed S]
                  the chaos soak: runners killed at random, failing and hanging
                  executors, Plane faults; checks caps, live dispatches and that
                  every task ends done or blocked (release build; default 30 min)
  fuzz NAME [--time SECS]
                  run one cargo-fuzz target (plane_response, usage_import, config, webhook,
                  ledger_open) for SECS seconds (default 600); installs cargo-fuzz
                  if missing
  help            this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::command(&args[1..]),
        Some("demo") => demo::command(&args[1..]),
        Some("dist") => dist::command(&args[1..]),
        Some("soak") => soak(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => {
            eprint!("xtask: unknown command {other:?}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type Result<T = ()> = std::result::Result<T, String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo builds: `CARGO_TARGET_DIR` (relative to the workspace's
/// root when relative, as cargo reads it from there), else `target/`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// A binary of the workspace, built in `profile` (`debug`, `release`).
pub(crate) fn built(profile: &str, name: &str) -> PathBuf {
    target_dir().join(profile).join(name)
}

/// A `cargo` for the workspace. `cargo xtask` runs this tool with the
/// variables cargo sets for a package it runs (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, …); a build started from here must not see them: build
/// scripts that track them (ring's does) would run again, and everything
/// after them be compiled again, at every command.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_for_the_run = name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_for_the_run {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub(crate) fn run(step: &str, mut cmd: Command) -> Result {
    eprintln!("\n==> {step}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    eprintln!("==> {step}: {:.1}s", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn output(mut cmd: Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The crates other services link, and the libraries behind both binaries.
/// Their code must never panic on what a user, a file or a server controls,
/// so these lints are denied in their library targets. Tests, benches,
/// binaries' `main`, the simulator and the tools may unwrap: a panic there
/// is a failed test or a tool's bug report. This list is the one place the
/// rule lives (Cargo's `[lints]` cannot tell library code from its tests).
const LIBRARY_CRATES: &[&str] = &[
    "inflight-config",
    "inflight-metrics",
    "ledger-core",
    "ledger-postgres",
    "plane-client",
    "plane-fleet",
    "process-probe",
    "reconcile",
    "runtime",
    "watcher-bin",
    "watchdog-bin",
];
const LIBRARY_LINTS: &[&str] = &[
    "clippy::unwrap_used",
    "clippy::expect_used",
    "clippy::indexing_slicing",
    "clippy::panic",
];

fn library_clippy() -> Command {
    let mut clippy = cargo();
    clippy.args(["clippy", "--lib", "--all-features", "--locked"]);
    for krate in LIBRARY_CRATES {
        clippy.args(["-p", krate]);
    }
    clippy.args(["--", "-D", "warnings"]);
    for lint in LIBRARY_LINTS {
        clippy.args(["-D", lint]);
    }
    clippy
}

fn ci() -> Result {
    let started = Instant::now();
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run("rustfmt", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run("clippy", clippy)?;
    run("clippy (library code)", library_clippy())?;

    check_boundaries()?;
    check_store_seam()?;

    // The end-to-end tests spawn the real binaries.
    let mut bins = cargo();
    bins.args(["build", "--workspace", "--bins", "--locked"]);
    run("binaries", bins)?;

    check_alert_rules()?;
    check_unit_files()?;

    let mut test = cargo();
    test.args(["test", "--workspace", "--locked"]);
    run("tests", test)?;

    // A short chaos soak on the binaries just built; `cargo xtask soak`
    // runs the long one.
    let mut soak = Command::new(built("debug", "soak"));
    soak.args(["--seconds", "60"]);
    run("soak (60 s)", soak)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("rustdoc", doc)?;

    eprintln!(
        "\nci: every check passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `deploy/prometheus/`: the alert rules load, and their unit tests pass.
fn check_alert_rules() -> Result {
    let dir = workspace_root().join("deploy/prometheus");
    let mut check = Command::new("promtool");
    check
        .current_dir(&dir)
        .args(["check", "rules", "inflight.rules.yml"]);
    run("promtool check rules", check)?;
    let mut test = Command::new("promtool");
    test.current_dir(&dir)
        .args(["test", "rules", "inflight.rules.test.yml"]);
    run("promtool test rules", test)
}

/// `deploy/systemd/`: `systemd-analyze verify` on every unit, with the
/// binaries they start pointed at the ones just built (it checks that
/// `ExecStart` is executable). Skipped, saying so, without systemd.
fn check_unit_files() -> Result {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("==> systemd unit files: skipped (no systemd-analyze on this machine)");
        return Ok(());
    }
    let root = workspace_root();
    let bins = target_dir().join("debug");
    let scratch = std::env::temp_dir().join(format!("inflight-units-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut units = Vec::new();
    let dir = root.join("deploy/systemd");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = text.replace("/usr/local/bin/", &format!("{}/", bins.display()));
        let copy = scratch.join(entry.file_name());
        std::fs::write(&copy, text).map_err(|e| format!("{}: {e}", copy.display()))?;
        units.push(copy);
    }
    units.sort();
    // A template is verified as one of its instances.
    let units: Vec<PathBuf> = units
        .into_iter()
        .map(|u| {
            let name = u
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match name.strip_suffix("@.service") {
                Some(stem) => {
                    let instance = u.with_file_name(format!("{stem}@goal.service"));
                    let _ = std::fs::rename(&u, &instance);
                    instance
                }
                None => u,
            }
        })
        .collect();
    eprintln!("==> systemd-analyze verify (deploy/systemd)");
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output();
    let secured = secure_enough(&units);
    let _ = std::fs::remove_dir_all(&scratch);
    let verified = verified.map_err(|e| format!("systemd-analyze: {e}"))?;
    // An unknown key is only a warning to systemd; here it is a failure.
    let said = String::from_utf8_lossy(&verified.stderr);
    if !verified.status.success() || !said.trim().is_empty() {
        return Err(format!("systemd-analyze verify: {}", said.trim()));
    }
    secured
}

/// The most exposure `systemd-analyze security` may rate a shipped
/// service, in its tenths (4.0: "OK" starts below 5).
const MOST_EXPOSURE: u32 = 40;

/// `systemd-analyze security --offline=yes` on every service unit: each
/// rated at most [`MOST_EXPOSURE`], the ratings printed.
fn secure_enough(units: &[PathBuf]) -> Result {
    eprintln!(
        "==> systemd-analyze security (deploy/systemd, at most {:.1})",
        f64::from(MOST_EXPOSURE) / 10.0
    );
    for unit in units
        .iter()
        .filter(|u| u.extension().is_some_and(|e| e == "service"))
    {
        let rated = Command::new("systemd-analyze")
            .args([
                "security",
                "--offline=yes",
                &format!("--threshold={MOST_EXPOSURE}"),
            ])
            .arg(unit)
            .output()
            .map_err(|e| format!("systemd-analyze security: {e}"))?;
        let said = String::from_utf8_lossy(&rated.stdout);
        let overall = said
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("(no overall rating)")
            .trim()
            .to_owned();
        eprintln!("    {overall}");
        if !rated.status.success() {
            return Err(format!(
                "systemd-analyze security: {} is rated above {:.1}: {overall}",
                unit.display(),
                f64::from(MOST_EXPOSURE) / 10.0
            ));
        }
    }
    Ok(())
}

/// The dependency rules of docs/ARCHITECTURE.md that a machine can check:
/// which crates may never appear in another's normal dependency tree.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("ledger-core", &["tokio", "reqwest", "hyper", "mockall"]),
    ("reconcile", &["reqwest", "redb", "hyper", "tokio"]),
    ("plane-client", &["redb"]),
    // The configuration is read by every binary and the keepers: no store
    // engine, no listener, no metrics.
    (
        "inflight-config",
        &["redb", "axum", "prometheus-client", "tracing-subscriber"],
    ),
    // The fleet's Plane coordination reaches the ledger through the
    // contract only.
    ("plane-fleet", &["redb", "tracing-subscriber"]),
    // Metrics read the ledger through the contract only.
    ("inflight-metrics", &["redb", "tracing-subscriber"]),
    // The probe is for any service that judges holders: std, libc and the
    // ledger's types only.
    (
        "process-probe",
        &[
            "tokio",
            "reqwest",
            "hyper",
            "redb",
            "axum",
            "postgres",
            "prometheus-client",
        ],
    ),
    // The PostgreSQL store: no redb, and TLS through rustls only.
    (
        "ledger-postgres",
        &[
            "redb",
            "openssl",
            "openssl-sys",
            "native-tls",
            "aws-lc-rs",
            "aws-lc-sys",
        ],
    ),
];

fn check_boundaries() -> Result {
    eprintln!("\n==> dependency boundaries");
    let members = output({
        let mut c = cargo();
        c.args(["metadata", "--no-deps", "--format-version", "1", "--locked"]);
        c
    })?;
    let mut violations = Vec::new();
    for (krate, banned) in FORBIDDEN {
        // A crate that does not exist yet has nothing to check.
        if !members.contains(&format!("\"name\":\"{krate}\"")) {
            continue;
        }
        let tree = output({
            let mut c = cargo();
            c.args([
                "tree", "--locked", "-p", krate, "-e", "normal", "--prefix", "none", "--format",
                "{p}",
            ]);
            c
        })?;
        let before = violations.len();
        for line in tree.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if banned.contains(&name) {
                violations.push(format!("{krate} depends on {name}"));
            }
        }
        if violations.len() == before {
            eprintln!("{krate}: none of {banned:?}");
        }
    }
    violations.sort();
    violations.dedup();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "dependency boundaries broken (see docs/ARCHITECTURE.md): {}",
            violations.join("; ")
        ))
    }
}

/// Where the binaries, `runtime` and the concern crates it wires may not
/// name the redb store: they hold the `LedgerStore` contract only. The one exception is the factory that
/// opens the configured store.
const SEAM_SOURCES: &[&str] = &[
    "crates/watcher-bin/src",
    "crates/watchdog-bin/src",
    "crates/runtime/src",
    "crates/plane-fleet/src",
    "crates/inflight-metrics/src",
    "crates/inflight-config/src",
    "crates/process-probe/src",
];
const SEAM_FACTORY: &str = "crates/runtime/src/store.rs";
/// The redb crate and the redb store's own types.
const REDB_NAMES: &[&str] = &[
    "redb",
    "Ledger",
    "LedgerOptions",
    "SharingMode",
    "ReconcileLock",
    "IntegrityReport",
];

/// Checks that no source file behind the seam names a redb type (as a
/// whole identifier: `LedgerStore` is fine, `Ledger` is not).
fn check_store_seam() -> Result {
    eprintln!("\n==> store seam");
    let root = workspace_root();
    let mut violations = Vec::new();
    let mut files = Vec::new();
    for dir in SEAM_SOURCES {
        collect_rs(&root.join(dir), &mut files)?;
    }
    for file in files {
        if file.ends_with(SEAM_FACTORY) {
            continue;
        }
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let code = without_strings(line.split("//").next().unwrap_or(""));
            for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if REDB_NAMES.contains(&word) {
                    violations.push(format!(
                        "{}:{}: names {word}",
                        file.strip_prefix(&root).unwrap_or(&file).display(),
                        n + 1
                    ));
                }
            }
        }
    }
    if violations.is_empty() {
        eprintln!("binaries and runtime name no redb type (outside {SEAM_FACTORY})");
        Ok(())
    } else {
        Err(format!(
            "the store seam is broken (see docs/ARCHITECTURE.md): {}",
            violations.join("; ")
        ))
    }
}

/// `line` with the contents of its string literals blanked: the redb
/// store's name in a configuration value (`store = "redb"`) is not the
/// redb crate.
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in line.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, _, '"') => {
                in_string = !in_string;
                out.push(c);
            }
            (true, false, _) => {}
            (false, _, c) => out.push(c),
        }
    }
    out
}

fn collect_rs(dir: &Path, into: &mut Vec<PathBuf>) -> Result {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect_rs(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
    Ok(())
}

fn soak(args: &[String]) -> Result {
    let mut build = cargo();
    build.args(["build", "--release", "--workspace", "--bins", "--locked"]);
    run("release binaries", build)?;
    let mut soak = Command::new(built("release", "soak"));
    if !args.iter().any(|a| a == "--minutes" || a == "--seconds") {
        soak.args(["--minutes", "30"]);
    }
    soak.args(args);
    run("soak", soak)
}

const FUZZ_TARGETS: &[&str] = &[
    "plane_response",
    "usage_import",
    "config",
    "ledger_open",
    "webhook",
];

fn fuzz(args: &[String]) -> Result {
    let Some(name) = args.first().filter(|n| FUZZ_TARGETS.contains(&n.as_str())) else {
        return Err(format!(
            "fuzz needs a target: one of {}",
            FUZZ_TARGETS.join(", ")
        ));
    };
    let time: u64 = match args.iter().position(|a| a == "--time") {
        Some(i) => args
            .get(i + 1)
            .and_then(|t| t.parse().ok())
            .ok_or("--time takes a number of seconds")?,
        None => 600,
    };
    let installed = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        let mut install = cargo();
        install.args(["install", "cargo-fuzz", "--locked"]);
        run("install cargo-fuzz", install)?;
    }
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus").join(name);
    let seeds = root.join("fuzz/seeds").join(name);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let mut fuzz = cargo();
    // cargo-fuzz passes nightly-only flags to rustc; the machine's toolchain
    // is stable, and RUSTC_BOOTSTRAP lets it accept them.
    fuzz.current_dir(root.join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", name])
        .arg(&corpus)
        .arg(&seeds)
        .args([
            "--",
            &format!("-max_total_time={time}"),
            "-print_final_stats=1",
            "-rss_limit_mb=4096",
        ]);
    run(&format!("fuzz {name} for {time} s"), fuzz)
}

#[cfg(test)]
mod seam_tests {
    use super::without_strings;

    #[test]
    fn string_contents_are_not_code() {
        assert_eq!(
            without_strings(r#"match store { "redb" => Ledger::open(p), _ => x("a\"redb") }"#),
            r#"match store { "" => Ledger::open(p), _ => x("") }"#
        );
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::workspace_root;

    /// The units point operators at the project's own documentation: the
    /// repository the workspace's manifest names, not a placeholder.
    #[test]
    fn the_units_documentation_links_are_the_workspaces_repository() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let repository = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("repository = "))
            .map(|v| v.trim_matches('"').to_owned())
            .expect("the workspace names its repository");
        assert!(!repository.contains("invalid") && !repository.contains("example"));
        let mut links = 0;
        for unit in std::fs::read_dir(root.join("deploy/systemd")).unwrap() {
            let path = unit.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for link in text
                .lines()
                .filter_map(|l| l.strip_prefix("Documentation="))
            {
                links += 1;
                for url in link.split_whitespace() {
                    assert!(
                        url.starts_with(&repository) || url.starts_with("man:"),
                        "{}: {url} is not under {repository}",
                        path.display()
                    );
                }
            }
        }
        assert!(links > 0, "no unit has a Documentation= line");
    }
}
