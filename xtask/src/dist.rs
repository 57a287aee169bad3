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
    if let Some(other) = args.first() {
        return Err(format!("dist: unexpected argument {other:?}"));
    }
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
    println!("{}", deb.display());
    println!("{}", tarball.display());
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
    write(
        &debian.join("postinst"),
        "#!/bin/sh\n\
         # Creates the system user the units run as; enables and starts nothing:\n\
         # the operator gives the credentials first (/etc/inflight/plane.env).\n\
         set -e\n\
         if [ \"$1\" = configure ]; then\n\
         \x20   if ! getent passwd inflight >/dev/null; then\n\
         \x20       adduser --system --group --home /var/lib/inflight --no-create-home \\\n\
         \x20           --gecos 'inflight runners' inflight >/dev/null\n\
         \x20   fi\n\
         fi\n\
         exit 0\n",
        0o755,
    )?;
    Ok(())
}

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
