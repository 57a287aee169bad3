//! A throwaway PostgreSQL server for tests, benchmarks and the demo:
//! `initdb` in a temporary folder, the server on a free loopback port and a
//! Unix socket in that folder, trust authentication for the `inflight`
//! role, stopped and deleted when the [`TestServer`] is dropped (or with
//! the process that started it).
//!
//! PostgreSQL refuses to run as root, so when this process is root the
//! server runs as the `postgres` user (the Debian package creates it). The
//! server programs are found through `INFLIGHT_PG_BIN` (a folder), then
//! `PATH`, then `/usr/lib/postgresql/<newest>/bin`.
//!
//! Needs the `test-server` feature.

use std::ffi::CString;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The role tests connect as.
pub const ROLE: &str = "inflight";

/// A running throwaway server.
#[derive(Debug)]
pub struct TestServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
#[error("the test PostgreSQL server: {0}")]
pub struct TestServerError(String);

fn fail(what: impl std::fmt::Display) -> TestServerError {
    TestServerError(what.to_string())
}

impl TestServer {
    /// Initialises and starts a server, waiting until it accepts
    /// connections.
    pub fn start() -> Result<Self, TestServerError> {
        let bin = server_programs()?;
        let dir = tempfile::Builder::new()
            .prefix("inflight-pg-")
            .tempdir()
            .map_err(|e| fail(format!("a temporary folder: {e}")))?;
        // initdb refuses root: run the server as `postgres`, who must own
        // the folder.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            let ids = postgres_user()?;
            chown(dir.path(), ids)?;
            Some(ids)
        } else {
            None
        };
        let mut server = Self {
            port: free_port()?,
            dir,
            bin,
            user,
            child: None,
        };
        server.initdb()?;
        server.launch()?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn program(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        // The server's locale messages and `initdb`'s checks do not depend
        // on the caller's environment.
        command.env("LC_ALL", "C").env_remove("PGDATA");
        command
    }

    fn initdb(&self) -> Result<(), TestServerError> {
        let out = self
            .program("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", ROLE, "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| fail(format!("could not run initdb: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<(), TestServerError> {
        let log = std::fs::File::create(self.dir.path().join("server.log"))
            .map_err(|e| fail(format!("the server log: {e}")))?;
        if let Some(ids) = self.user {
            chown(&self.dir.path().join("server.log"), ids)?;
        }
        let mut command = self.program("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            // Durable commits, as in production: the benchmarks measure them.
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| fail(e.to_string()))?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. The server dies with the
        // process that started it (a test binary that panicked or was
        // killed leaves no server behind); SIGQUIT is its immediate stop.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The parent-death signal fires when the *thread* that forked the
        // server ends, so the server is forked from a thread that never
        // does (a test thread that started a shared server ends long before
        // the test binary).
        let (reply, spawned) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-parent".into())
            .spawn(move || {
                let _ = reply.send(command.spawn());
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| fail(format!("a thread to start postgres from: {e}")))?;
        let child = spawned
            .recv()
            .map_err(|e| fail(format!("could not start postgres: {e}")))?
            .map_err(|e| fail(format!("could not start postgres: {e}")))?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> Result<(), TestServerError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .program("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(fail(format!(
                    "postgres exited ({status}) while starting: {}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "postgres did not accept connections within 60 s: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .get(lines.len().saturating_sub(15)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// The server's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Logs every statement sent to `database` by the sessions that start
    /// from now on, each line with its session's process id (`[pid]`): for
    /// tests that count round trips in [`log`](Self::log). A statement sent
    /// in one round trip is one `statement:` or `execute` line.
    pub fn log_statements(&self, database: &str) -> Result<(), TestServerError> {
        let out = self
            .program("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!(
                "ALTER DATABASE \"{database}\" SET log_statement = 'all'"
            ))
            .output()
            .map_err(|e| fail(format!("could not run psql: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "could not log {database}'s statements: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the [`ROLE`] (no password: the
    /// server trusts loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database.
    pub fn create_database(&self, name: &str) -> Result<(), TestServerError> {
        let out = self
            .program("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                ROLE,
                name,
            ])
            .output()
            .map_err(|e| fail(format!("could not run createdb: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Restarts the server in place, as `pg_ctl restart -m fast` does: every
    /// connection is cut, nothing committed is lost.
    pub fn restart(&mut self) -> Result<(), TestServerError> {
        self.stop();
        self.launch()
    }

    /// Stops the server (fast shutdown: connections are cut, commits kept).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT is PostgreSQL's "fast" shutdown.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TestServer {
    /// Starts a PgBouncer (Debian's `pgbouncer`) in transaction mode in
    /// front of this server, with at most `pool_size` server connections
    /// per database and user: the pooler a fleet of many hosts puts
    /// between its runners and the database.
    pub fn bouncer(&self, pool_size: u32) -> Result<TestBouncer, TestServerError> {
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                fail(
                    "pgbouncer was not found: install the `pgbouncer` package \
                     (apt-get install pgbouncer)",
                )
            })?;
        let dir = tempfile::Builder::new()
            .prefix("inflight-pgbouncer-")
            .tempdir()
            .map_err(|e| fail(format!("a temporary folder: {e}")))?;
        let port = free_port()?;
        let file = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|e| fail(format!("{name}: {e}")))?;
            if let Some(ids) = self.user {
                chown(&path, ids)?;
            }
            Ok::<_, TestServerError>(path)
        };
        // Trust, as the server does; the user must still be listed.
        let users = file("userlist.txt", format!("\"{ROLE}\" \"\"\n"))?;
        let log = dir.path().join("pgbouncer.log");
        let config = file(
            "pgbouncer.ini",
            format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={server}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 2000\n\
                 logfile = {log}\n",
                server = self.port,
                users = users.display(),
                log = log.display(),
            ),
        )?;
        if let Some(ids) = self.user {
            chown(dir.path(), ids)?;
        }
        let mut command = Command::new(program);
        // PgBouncer refuses root, as PostgreSQL does.
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| fail(format!("could not start pgbouncer: {e}")))?;
        let mut bouncer = TestBouncer {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = bouncer.child.as_mut().map(Child::try_wait) {
                return Err(fail(format!(
                    "pgbouncer exited ({status}) while starting: {}",
                    bouncer.log_tail()
                )));
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "pgbouncer did not listen within 30 s: {}",
                    bouncer.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(bouncer)
    }
}

/// A running PgBouncer in transaction mode ([`TestServer::bouncer`]).
#[derive(Debug)]
pub struct TestBouncer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl TestBouncer {
    /// A connection URL for `database` through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// The pooler's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The end of the pooler's log.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for TestBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The folder holding `initdb` and `postgres`.
fn server_programs() -> Result<PathBuf, TestServerError> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("INFLIGHT_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has(&dir) {
            Ok(dir)
        } else {
            Err(fail(format!(
                "INFLIGHT_PG_BIN={} holds no initdb and postgres",
                dir.display()
            )))
        };
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has(d))
    {
        // Debian links initdb into PATH but not always postgres; resolve
        // the link to the real folder, which has both.
        let real = std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| has(d));
        return Ok(real.unwrap_or(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        fail(
            "PostgreSQL's server programs (initdb, postgres) were not found: install the \
             `postgresql` package (apt-get install postgresql), or set INFLIGHT_PG_BIN to \
             the folder that holds them",
        )
    })
}

fn postgres_user() -> Result<(u32, u32), TestServerError> {
    let name = CString::new("postgres").map_err(|e| fail(e.to_string()))?;
    // SAFETY: getpwnam returns a pointer into static storage or null; the
    // fields are read at once, before any other call could reuse it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(fail(
            "running as root, and there is no `postgres` user to run the server as \
             (PostgreSQL refuses root; the postgresql package creates that user)",
        ));
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok((uid, gid))
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), TestServerError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| fail(format!("chown {}: {e}", path.display())))
}

fn free_port() -> Result<u16, TestServerError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| fail(format!("a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| fail(format!("a free port: {e}")))
}
