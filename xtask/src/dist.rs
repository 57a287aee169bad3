//! `cargo xtask dist`: what an operator installs, from this tree: a Debian
//! package and a tarball of the same files, under `target/dist/`.
//!
//! Both hold the two binaries (release, stripped; `--version` names the
//! commit), their manual pages and bash, zsh and fish completions made from
//! the command-line definitions themselves (`watcher_bin::cli`,
//! `watchdog_bin::cli`), the systemd units (installed, never enabled or
//! started: the operator gives credentials first), and an example
//! configuration in `/etc/inflight/` with its paths under
//! `/var/lib/inflight`. The package's `postinst` creates the `inflight`
//! system user. The `.deb` is built with `dpkg-deb` from a staged tree (no
//! packaging tool to install), and checked with `lintian` when it is there.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use crate::{Result, cargo, run, target_dir, workspace_root};

const PACKAGE: &str = "inflight";
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn command(args: &[String]) -> Result {
    let verify = match args {
        [] => false,
        [flag] if flag == "--verify" => true,
        [other, ..] => return Err(format!("dist: unexpected argument {other:?}")),
    };
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "watcher-bin",
        "-p",
        "watchdog-bin",
        "--bins",
    ]);
    run("release binaries", build)?;
    let arch = debian_arch()?;
    let dist = target_dir().join("dist");
    let stage = dist.join(format!("{PACKAGE}_{VERSION}_{arch}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    }
    stage_files(&stage)?;
    control_files(&stage, &arch)?;

    let deb = dist.join(format!("{PACKAGE}_{VERSION}_{arch}.deb"));
    let mut pack = Command::new("dpkg-deb");
    pack.args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb);
    run("dpkg-deb --build", pack)?;
    let tarball = dist.join(format!("{PACKAGE}-{VERSION}-linux-{arch}.tar.gz"));
    let mut tar = Command::new("tar");
    tar.args(["--owner=0", "--group=0", "--exclude=./DEBIAN", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&stage)
        .arg(".");
    run("tarball", tar)?;
    lintian(&deb)?;
    if verify {
        verify_install(&deb, &dist.join("verify-root"))?;
    }
    println!("{}", deb.display());
    println!("{}", tarball.display());
    Ok(())
}

/// Installs `deb` with `dpkg --root` into a scratch root made at `root`
/// (an empty dpkg database, the base system's user files) and checks what
/// it left: the files, the `inflight` user in the root's `passwd` (the
/// host's untouched), no unit enabled, and the installed `watchdog`
/// naming its commit.
fn verify_install(deb: &Path, root: &Path) -> Result {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| format!("{}: {e}", p.display())
    };
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(io(root))?;
    }
    for dir in [
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(dir)).map_err(io(root))?;
    }
    for (file, text) in [
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/gshadow", "root:*::\n"),
    ] {
        write(&root.join(file), text, 0o644)?;
    }
    let defs = std::fs::read("/etc/login.defs").unwrap_or_default();
    write(&root.join("etc/login.defs"), defs, 0o644)?;
    let host_had_user = std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.starts_with("inflight:")))
        .unwrap_or(false);
    let mut install = Command::new("dpkg");
    install
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-not-root",
            "--force-script-chrootless",
            // The scratch root has no libc6 or adduser package recorded.
            "--force-depends",
            "-i",
        ])
        .arg(deb);
    run("dpkg --root -i (a scratch root)", install)?;
    let mut missing = Vec::new();
    for file in [
        "usr/bin/watcher",
        "usr/bin/watchdog",
        "usr/share/man/man1/watcher.1.gz",
        "usr/share/man/man1/watchdog.1.gz",
        "usr/share/man/man1/watchdog-run.1.gz",
        "usr/share/bash-completion/completions/watcher",
        "usr/share/zsh/vendor-completions/_watchdog",
        "usr/share/fish/vendor_completions.d/watcher.fish",
        "lib/systemd/system/inflight-watcher@.service",
        "lib/systemd/system/inflight-watchdog-run.service",
        "etc/inflight/inflight.toml",
        "usr/share/doc/inflight/copyright",
    ] {
        if !root.join(file).is_file() {
            missing.push(file);
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "dist --verify: not installed: {}",
            missing.join(", ")
        ));
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).map_err(io(root))?;
    if !passwd.lines().any(|l| l.starts_with("inflight:")) {
        return Err("dist --verify: the inflight user was not created".into());
    }
    let host_has_user = std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.starts_with("inflight:")))
        .unwrap_or(false);
    if host_has_user && !host_had_user {
        return Err("dist --verify: the host's own passwd got the user".into());
    }
    if root.join("etc/systemd/system").exists() {
        return Err("dist --verify: a unit was enabled".into());
    }
    let version = Command::new(root.join("usr/bin/watchdog"))
        .arg("--version")
        .output()
        .map_err(|e| format!("the installed watchdog: {e}"))?;
    let said = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    if !said.contains("(commit ") || said.contains("(commit unknown)") {
        return Err(format!("dist --verify: --version names no commit: {said}"));
    }
    eprintln!(
        "==> dist --verify: installed into {}: files, the user, no unit enabled; {said}",
        root.display()
    );
    Ok(())
}

/// Debian's name for this machine's architecture.
fn debian_arch() -> Result<String> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64".into()),
        "aarch64" => Ok("arm64".into()),
        other => Err(format!("dist: no Debian architecture known for {other}")),
    }
}

fn write(path: &Path, text: impl AsRef<[u8]>, mode: u32) -> Result {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `gzip -9n` of `path`, in place (`path.gz`), as Debian wants manual pages
/// and changelogs.
fn gzip(path: &Path) -> Result {
    let mut gz = Command::new("gzip");
    gz.args(["-9nf"]).arg(path);
    let status = gz.status().map_err(|e| format!("gzip: {e}"))?;
    if !status.success() {
        return Err(format!("gzip {}: {status}", path.display()));
    }
    Ok(())
}

/// The files, as installed.
fn stage_files(stage: &Path) -> Result {
    let root = workspace_root();
    // The binaries, stripped (their line tables are for development).
    for bin in ["watcher", "watchdog"] {
        let to = stage.join("usr/bin").join(bin);
        let from = crate::built("release", bin);
        let bytes = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        write(&to, bytes, 0o755)?;
        let mut strip = Command::new("strip");
        strip
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&to);
        let status = strip.status().map_err(|e| format!("strip: {e}"))?;
        if !status.success() {
            return Err(format!("strip {}: {status}", to.display()));
        }
    }
    // Manual pages and completions from the command lines themselves.
    let man = stage.join("usr/share/man/man1");
    std::fs::create_dir_all(&man).map_err(|e| format!("{}: {e}", man.display()))?;
    for (name, command) in [
        ("watcher", watcher_bin::cli::Args::command()),
        ("watchdog", watchdog_bin::cli::Args::command()),
    ] {
        clap_mangen::generate_to(command.clone(), &man)
            .map_err(|e| format!("manual pages of {name}: {e}"))?;
        for (shell, dir, file) in [
            (
                clap_complete::Shell::Bash,
                "usr/share/bash-completion/completions",
                name.to_owned(),
            ),
            (
                clap_complete::Shell::Zsh,
                "usr/share/zsh/vendor-completions",
                format!("_{name}"),
            ),
            (
                clap_complete::Shell::Fish,
                "usr/share/fish/vendor_completions.d",
                format!("{name}.fish"),
            ),
        ] {
            let mut command = command.clone();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut command, name, &mut text);
            write(&stage.join(dir).join(file), text, 0o644)?;
        }
    }
    let pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .map_err(|e| format!("{}: {e}", man.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    for page in pages {
        gzip(&page)?;
    }
    // The units, pointing at the packaged binaries.
    let units = root.join("deploy/systemd");
    for entry in std::fs::read_dir(&units)
        .map_err(|e| format!("{}: {e}", units.display()))?
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let text = text.replace("/usr/local/bin/", "/usr/bin/");
        write(
            &stage.join("lib/systemd/system").join(entry.file_name()),
            text,
            0o644,
        )?;
    }
    // The example configuration, and the documentation.
    let example = root.join("deploy/inflight.toml");
    let text =
        std::fs::read_to_string(&example).map_err(|e| format!("{}: {e}", example.display()))?;
    write(&stage.join("etc/inflight/inflight.toml"), text, 0o644)?;
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    for file in ["docs/configuration.md", "docs/operations.md"] {
        let from = root.join(file);
        let text = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        let name = Path::new(file).file_name().unwrap_or_default();
        write(&doc.join(name), text, 0o644)?;
    }
    write(&doc.join("copyright"), copyright(), 0o644)?;
    // A native package's changelog (its version has no Debian revision).
    write(&doc.join("changelog"), changelog(), 0o644)?;
    gzip(&doc.join("changelog"))?;
    Ok(())
}

fn copyright() -> String {
    let license = workspace_license();
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: {PACKAGE}\n\
         Source: https://github.com/inflight/inflight\n\
         \n\
         Files: *\n\
         Copyright: 2026 the inflight developers\n\
         License: {license}\n\
         \x20See /usr/share/common-licenses for the text of the common licenses,\n\
         \x20and the license files of the source tree.\n"
    )
}

/// The workspace's `license` field.
fn workspace_license() -> String {
    std::fs::read_to_string(workspace_root().join("Cargo.toml"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("license = "))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn changelog() -> String {
    let date = Command::new("date")
        .arg("-R")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{PACKAGE} ({VERSION}) unstable; urgency=medium\n\n  * Built by cargo xtask dist.\n\n -- inflight developers <dev@inflight.invalid>  {date}\n"
    )
}

/// `DEBIAN/`: the control file, the configuration file marked as one, and
/// the script that creates the system user.
fn control_files(stage: &Path, arch: &str) -> Result {
    let size = installed_size(stage);
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: inflight developers <dev@inflight.invalid>\n\
         Installed-Size: {size}\n\
         Depends: libc6 (>= 2.34), libgcc-s1, adduser\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://github.com/inflight/inflight\n\
         Description: keeps task runners honest about their concurrency slots\n\
         \x20inflight runs tasks from a Plane board under per-backend caps, with a\n\
         \x20crash-safe ledger of in-flight dispatches: a runner that dies gives\n\
         \x20its slots back at the next start, a live dispatch is never reclaimed,\n\
         \x20and a deploy's restart costs no running work.\n\
         \x20.\n\
         \x20This package installs the watcher and watchdog binaries, their\n\
         \x20manual pages and completions, systemd units (not enabled) and an\n\
         \x20example configuration in /etc/inflight.\n"
    );
    let debian = stage.join("DEBIAN");
    write(&debian.join("control"), control, 0o644)?;
    write(
        &debian.join("conffiles"),
        "/etc/inflight/inflight.toml\n",
        0o644,
    )?;
    write(&debian.join("postinst"), POSTINST, 0o755)?;
    Ok(())
}

/// Creates the system user the units run as; enables and starts nothing.
/// Under `dpkg --root` (`DPKG_ROOT`, as `dist --verify` installs) the user
/// goes into that root, never the host's.
const POSTINST: &str = r#"#!/bin/sh
# Creates the system user the units run as; enables and starts nothing:
# the operator gives the credentials first (/etc/inflight/plane.env).
set -e
if [ "$1" = configure ]; then
    if [ -n "${DPKG_ROOT:-}" ]; then
        # Status 9: the user is there already (a reinstall).
        useradd --prefix "$DPKG_ROOT" --system --user-group \
            --home-dir /var/lib/inflight --no-create-home \
            --shell /usr/sbin/nologin --comment 'inflight runners' inflight \
            || [ $? -eq 9 ]
    elif ! getent passwd inflight >/dev/null; then
        adduser --system --group --home /var/lib/inflight --no-create-home \
            --gecos 'inflight runners' inflight >/dev/null
    fi
fi
exit 0
"#;

/// The staged tree's size in KiB, without `DEBIAN/`.
fn installed_size(stage: &Path) -> u64 {
    fn walk(path: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if meta.is_dir() {
            std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else {
            meta.len().div_ceil(1024)
        }
    }
    walk(stage)
}

/// `lintian` on the package when it is installed: an error fails `dist`.
fn lintian(deb: &Path) -> Result {
    if Command::new("lintian").arg("--version").output().is_err() {
        eprintln!("==> lintian: skipped (not installed; Debian's lintian package)");
        return Ok(());
    }
    let mut check = Command::new("lintian");
    check.args(["--fail-on", "error,warning"]);
    check.arg(deb);
    run("lintian", check)
}
