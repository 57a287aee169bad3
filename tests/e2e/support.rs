//! A world for one test: a simulator with a board, a configuration file, a
//! ledger, and handles on the processes the test starts.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ledger_core::{Ledger, LedgerStore, ProjectRef, Slot};
use plane_sim::{PlaneSim, SimConfig};
use serde_json::Value;

pub const KEY: &str = "plane_api_e2e0000000000000000000000000000";

pub use inflight_e2e::workspace_bin as bin;

/// A role: its name and the column it claims from.
pub struct Role {
    pub name: &'static str,
    pub claim_state: &'static str,
    pub max_attempts: u32,
}

impl Role {
    pub const fn new(name: &'static str, claim_state: &'static str) -> Self {
        Self {
            name,
            claim_state,
            max_attempts: 3,
        }
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub sim: PlaneSim,
    /// With [`World::on_postgres`], the options of its ledger's schema.
    pub postgres: Option<ledger_postgres::PgOptions>,
    /// Where `watcher` and `watchdog` are taken from (`None`: beside this
    /// test), for a benchmark that runs another revision's.
    pub bins: Option<PathBuf>,
    /// The niceness the processes it starts run at (and what they start:
    /// keepers, executors), for a benchmark that shares the machine's
    /// CPUs with a database standing in for one on a host of its own.
    pub nice: i32,
    /// Keeps the simulator's server running.
    _rt: tokio::runtime::Runtime,
    children: Vec<Child>,
}

impl World {
    /// A board with one backend capped at `cap` and these roles.
    pub fn new(cap: u32, roles: &[Role]) -> Self {
        Self::with_executor_env(cap, roles, &[])
    }

    pub fn with_executor_env(cap: u32, roles: &[Role], extra: &[(&str, &str)]) -> Self {
        Self::build(cap, roles, extra, None)
    }

    /// A board for the project `project_id` (a recorded delivery's, say).
    pub fn for_project(cap: u32, roles: &[Role], project_id: &str) -> Self {
        Self::build(cap, roles, &[], Some(project_id.to_owned()))
    }

    fn build(cap: u32, roles: &[Role], extra: &[(&str, &str)], project_id: Option<String>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt
            .block_on(PlaneSim::start(SimConfig {
                api_keys: vec![KEY.into()],
                rate_limit: None,
                project_id,
                ..SimConfig::default()
            }))
            .unwrap();
        sim.add_state("Running", "started");
        sim.add_state("Blocked", "backlog");
        for role in roles {
            if sim.states().iter().all(|s| s.name != role.claim_state) {
                sim.add_state(role.claim_state, "unstarted");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let text = inflight_e2e::TestConfig {
            base_url: sim.base_url(),
            project_id: sim.project_id(),
            key_env: "E2E_PLANE_KEY".into(),
            command: vec![bin("e2e-executor").display().to_string()],
            cap,
            roles: roles
                .iter()
                .map(|role| inflight_e2e::TestRole {
                    max_attempts: role.max_attempts,
                    ..inflight_e2e::TestRole::new(role.name, role.claim_state)
                })
                .collect(),
            extra: vec![
                ("plane", "request_timeout_secs = 5".into()),
                // The simulator has no limit here; every process of a test
                // draws from this one shared budget, polling every second.
                ("plane", "rate_limit_per_minute = 6000".into()),
                ("limits", "max_concurrent = 8".into()),
                ("backends.local", "timeout_secs = 120".into()),
                ("watcher", "poll_interval_secs = 1".into()),
                ("watcher", "lease_secs = 30".into()),
                ("watcher", "grace_secs = 2".into()),
            ],
        }
        .render();
        let config = dir.path().join("inflight.toml");
        std::fs::write(&config, text).unwrap();
        std::fs::write(
            dir.path().join("executor.env"),
            extra
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>(),
        )
        .unwrap();
        Self {
            dir,
            config,
            sim,
            postgres: None,
            bins: None,
            nice: 0,
            _rt: rt,
            children: Vec::new(),
        }
    }

    /// The ledger in a fresh schema of the suite's throwaway PostgreSQL,
    /// with a short lease (6 s, renewed every second) so that a dead
    /// host's slots come back within a test's time.
    pub fn on_postgres(self) -> Self {
        self.on_postgres_at(postgres_server())
    }

    /// [`World::on_postgres`], on a server of the test's own (one it may
    /// restart).
    pub fn on_postgres_at(self, server: &ledger_postgres::test_server::TestServer) -> Self {
        self.on_postgres_url(server.url("inflight"))
    }

    /// [`World::on_postgres`], every process reaching the database through
    /// a PgBouncer in transaction mode.
    pub fn on_postgres_through_pgbouncer(self) -> Self {
        self.on_postgres_url(pg_bouncer().url("inflight"))
    }

    /// [`World::on_postgres`], in a database of the suite's server whose
    /// every statement the server logs (`TestServer::log_statements`),
    /// for counting round trips.
    pub fn on_postgres_logging_statements(self) -> Self {
        static LOGGED: std::sync::Once = std::sync::Once::new();
        let server = postgres_server();
        LOGGED.call_once(|| {
            server.create_database("logged").unwrap();
            server.log_statements("logged").unwrap();
        });
        self.on_postgres_url(server.url("logged"))
    }

    /// [`World::on_postgres`], every process reaching the database
    /// through `bouncer` (a benchmark's, of its own size).
    #[allow(dead_code)] // the fleet-pg benchmark's
    pub fn on_postgres_through(self, bouncer: &ledger_postgres::test_server::TestBouncer) -> Self {
        self.on_postgres_url(bouncer.url("inflight"))
    }

    fn on_postgres_url(mut self, url: String) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "e2e_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        self.edit_config(
            "path = \"var/inflight.redb\"",
            &format!(
                "store = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\nlease_secs = 6\nrenew_secs = 1"
            ),
        );
        let mut options = ledger_postgres::PgOptions::new(url);
        options.schema = schema;
        self.postgres = Some(options);
        self
    }

    /// Starts a runner for `role` as host `host` (`INFLIGHT_HOST`).
    pub fn start_runner_on(&mut self, host: &str, role: &str, tag: &str) -> usize {
        self.spawn(
            Some(host),
            "watcher",
            &["--role", role, "--log-format", "json"],
            tag,
        )
    }

    /// Starts a runner for `role` as host `host` whose ledger is reached
    /// at `port` on loopback (a [`Partition`]'s) instead of the server's.
    pub fn start_runner_through(&mut self, port: u16, host: &str, role: &str, tag: &str) -> usize {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let direct = format!("127.0.0.1:{}", postgres_server().port());
        let config = self.path(&format!("inflight-{host}.toml"));
        std::fs::write(&config, text.replace(&direct, &format!("127.0.0.1:{port}"))).unwrap();
        let shared = std::mem::replace(&mut self.config, config);
        let index = self.start_runner_on(host, role, tag);
        self.config = shared;
        index
    }

    /// Each attempt of `task` that ended: (start ms, end ms, host), as the
    /// executors recorded them.
    pub fn runs(&self, task: &str) -> Vec<(u128, u128, String)> {
        std::fs::read_to_string(self.path(&format!("runs/{task}")))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                Some((
                    parts.next()?.parse().ok()?,
                    parts.next()?.parse().ok()?,
                    parts.next()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Starts `watchdog run --interval 1 --apply`.
    pub fn start_watchdog(&mut self, tag: &str) -> usize {
        self.spawn(
            None,
            "watchdog",
            &["--log-format", "json", "run", "--interval", "1", "--apply"],
            tag,
        )
    }

    /// Starts `watchdog run --interval 1 --apply` as host `host`.
    pub fn start_watchdog_on(&mut self, host: &str, tag: &str) -> usize {
        self.spawn(
            Some(host),
            "watchdog",
            &["--log-format", "json", "run", "--interval", "1", "--apply"],
            tag,
        )
    }

    /// Starts `program` with this world's configuration, logging to
    /// `logs/<tag>.log`, as `host` when given (`INFLIGHT_HOST`).
    pub fn spawn(&mut self, host: Option<&str>, program: &str, args: &[&str], tag: &str) -> usize {
        let config = self.config.clone();
        self.spawn_with(&config, host, program, args, tag)
    }

    /// Starts `program` with `args` and this world's configuration,
    /// logging to `logs/<tag>.log`.
    pub fn spawn_args(&mut self, program: &str, args: &[&str], tag: &str) -> usize {
        self.spawn(None, program, args, tag)
    }

    /// Starts a runner for `role` with the configuration file `config`
    /// (a variant of this world's), logging JSON to `logs/<tag>.log`.
    #[allow(dead_code)] // the fleet benchmark's
    pub fn start_runner_with(&mut self, config: &std::path::Path, role: &str, tag: &str) -> usize {
        self.spawn_with(
            config,
            None,
            "watcher",
            &["--role", role, "--log-format", "json"],
            tag,
        )
    }

    /// Starts `program` with `args` and the configuration file `config`
    /// (a variant of this world's), logging to `logs/<tag>.log`.
    pub fn spawn_with_config(
        &mut self,
        config: &std::path::Path,
        program: &str,
        args: &[&str],
        tag: &str,
    ) -> usize {
        self.spawn_with(config, None, program, args, tag)
    }

    fn spawn_with(
        &mut self,
        config: &std::path::Path,
        host: Option<&str>,
        program: &str,
        args: &[&str],
        tag: &str,
    ) -> usize {
        std::fs::create_dir_all(self.path("logs")).unwrap();
        let log = std::fs::File::create(self.path(&format!("logs/{tag}.log"))).unwrap();
        let program = match &self.bins {
            Some(dir) if program == "watcher" || program == "watchdog" => dir.join(program),
            _ => bin(program),
        };
        let mut command = Command::new(program);
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(host) = host {
            command.env("INFLIGHT_HOST", host);
        }
        self.env(&mut command);
        if self.nice != 0 {
            use std::os::unix::process::CommandExt;
            let nice = self.nice;
            // SAFETY: setpriority is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.children.push(command.spawn().unwrap());
        self.children.len() - 1
    }

    /// The simulator's project, as a slot records it.
    pub fn project(&self) -> ProjectRef {
        ProjectRef {
            workspace: "acme".into(),
            project_id: self.sim.project_id(),
        }
    }

    /// The process id of child `index`.
    pub fn pid(&self, index: usize) -> u32 {
        self.children[index].id()
    }

    /// The PostgreSQL ledger of [`World::on_postgres`].
    /// Where the world's PostgreSQL ledger is (URL and schema).
    pub fn pg_options(&self) -> ledger_postgres::PgOptions {
        self.postgres.clone().expect("on_postgres")
    }

    pub fn pg(&self) -> ledger_postgres::PgLedger {
        let options = self.postgres.clone().expect("on_postgres");
        ledger_postgres::PgLedger::open(options).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn env(&self, command: &mut Command) {
        command
            .env("E2E_PLANE_KEY", KEY)
            .env("E2E_DIR", self.dir.path());
        let extra = std::fs::read_to_string(self.path("executor.env")).unwrap_or_default();
        for line in extra.lines() {
            if let Some((k, v)) = line.split_once('=') {
                command.env(k, v);
            }
        }
    }

    /// Starts a runner for `role`, logging JSON to `logs/<tag>.log`.
    pub fn start_runner(&mut self, role: &str, tag: &str) -> usize {
        self.spawn(
            None,
            "watcher",
            &["--role", role, "--log-format", "json"],
            tag,
        )
    }

    /// Adds `line` to the configuration file right after the `[table]`
    /// header.
    pub fn configure(&self, table: &str, line: &str) {
        let header = format!("[{table}]\n");
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(&header), "no {header} in the configuration");
        std::fs::write(
            &self.config,
            text.replacen(&header, &format!("{header}{line}\n"), 1),
        )
        .unwrap();
    }

    /// Has `watchdog run` receive webhooks signed with `secret` on a free
    /// port, returned, and the runners poll every 300 s (the default with
    /// webhooks on).
    pub fn receive_webhooks(&self, secret: &str) -> u16 {
        self.edit_config("poll_interval_secs = 1", "poll_interval_secs = 300");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(&format!(
            "\n[webhook]\nlisten = \"127.0.0.1:{port}\"\nsecret_env = \"E2E_WEBHOOK_SECRET\"\nmax_body_bytes = 65536\n"
        ));
        std::fs::write(&self.config, text).unwrap();
        let env = self.path("executor.env");
        let mut lines = std::fs::read_to_string(&env).unwrap_or_default();
        lines.push_str(&format!("E2E_WEBHOOK_SECRET={secret}\n"));
        std::fs::write(env, lines).unwrap();
        port
    }

    /// Replaces `from` with `to` in the configuration file.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "{from:?} is not in the configuration");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// Runs `watcher --once` for `role` to completion.
    pub fn watcher_once(&self, role: &str) -> Output {
        let mut command = Command::new(bin("watcher"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(["--role", role, "--once"]);
        self.env(&mut command);
        command.output().unwrap()
    }

    /// Runs `program <args>` (a binary of the workspace) with this world's
    /// configuration and environment, to completion.
    pub fn run_bin(&self, program: &str, args: &[&str]) -> Output {
        let mut command = Command::new(bin(program));
        command.arg("--config").arg(&self.config).args(args);
        self.env(&mut command);
        command.output().unwrap()
    }

    /// Runs `watchdog <args>` to completion with `PLANE_KEY` as the key.
    pub fn watchdog_with_key(&self, key: &str, args: &[&str]) -> Output {
        let mut command = Command::new(bin("watchdog"));
        command.arg("--config").arg(&self.config).args(args);
        self.env(&mut command);
        command.env("E2E_PLANE_KEY", key);
        command.output().unwrap()
    }

    /// Opens a slot for `task` as a runner of this host that has since died
    /// would have left it (its pid is beyond any pid the kernel hands out).
    pub fn slot_of_a_dead_runner(&self, task: &str) {
        let dead = ledger_core::ProcessIdentity {
            pid: 5_000_000,
            start_time: 1,
        };
        self.open_slot(task, local_owner(dead, None, None));
    }

    /// Opens a slot for `task` as a runner on another host would have,
    /// claiming from `project` (`None`: a slot that recorded no project,
    /// like an imported one): its liveness is unknown here, so a scan asks
    /// Plane about it.
    pub fn slot_from_elsewhere(&self, task: &str, project: Option<ProjectRef>) {
        self.open_slot(
            task,
            ledger_core::Owner {
                host: "another-host".into(),
                boot_id: "another-boot".into(),
                runner: ledger_core::ProcessIdentity {
                    pid: 4242,
                    start_time: 1,
                },
                executor: None,
                role: Some("goal".into()),
                project,
                keeper: None,
                outcome: None,
                title: None,
            },
        );
    }

    /// Opens a slot for `task` held on this host by `holder` for role
    /// `goal` of this world's project, as a keeper of protocol `keeper`
    /// (`None`: as a runner) would hold it.
    pub fn slot_held_by(
        &self,
        task: &str,
        holder: ledger_core::ProcessIdentity,
        keeper: Option<u32>,
    ) {
        self.open_slot(task, local_owner(holder, Some(self.project()), keeper));
    }

    fn open_slot(&self, task: &str, owner: ledger_core::Owner) {
        if self.postgres.is_some() {
            inflight_e2e::open_test_slot(&self.pg(), task, owner, Duration::from_secs(30));
        } else {
            inflight_e2e::open_test_slot(&self.ledger(), task, owner, Duration::from_secs(30));
        }
    }

    pub fn log(&self, tag: &str) -> String {
        std::fs::read_to_string(self.path(&format!("logs/{tag}.log"))).unwrap_or_default()
    }

    /// Runs `watchdog <args>` to completion.
    pub fn watchdog(&self, args: &[&str]) -> Output {
        self.watchdog_with(&self.config, args)
    }

    /// Runs `watchdog --config CONFIG <args>` to completion.
    pub fn watchdog_with(&self, config: &std::path::Path, args: &[&str]) -> Output {
        let mut command = Command::new(bin("watchdog"));
        command.arg("--config").arg(config).args(args);
        self.env(&mut command);
        command.output().unwrap()
    }

    pub fn watchdog_json(&self, args: &[&str]) -> Value {
        let out = self.watchdog(args);
        assert!(
            out.status.success(),
            "watchdog {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn ledger(&self) -> Ledger {
        Ledger::open(self.path("var/inflight.redb")).unwrap()
    }

    /// The open slots, from whichever store the world's ledger is in.
    pub fn open_slots(&self) -> Vec<Slot> {
        if self.postgres.is_some() {
            use ledger_core::LedgerStore;
            return self.pg().open_slots().unwrap();
        }
        self.ledger().open_slots().unwrap()
    }

    /// The executor processes started for `task`, in start order, with the
    /// grandchild each left behind (if any).
    pub fn executor_pids(&self, task: &str) -> Vec<(u32, Option<u32>)> {
        let mut found: Vec<(std::time::SystemTime, u32, Option<u32>)> =
            std::fs::read_dir(self.path("pids"))
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|e| {
                            let name = e.file_name().into_string().ok()?;
                            let (t, pid) = name.rsplit_once('.')?;
                            (t == task).then_some(())?;
                            let grandchild =
                                std::fs::read_to_string(e.path()).ok()?.trim().parse().ok();
                            Some((
                                e.metadata().ok()?.modified().ok()?,
                                pid.parse().ok()?,
                                grandchild,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
        found.sort();
        found.into_iter().map(|(_, pid, g)| (pid, g)).collect()
    }

    /// The pid of the keeper holding `task`'s slot, once a keeper holds it.
    pub fn keeper_of(&self, task: &str) -> Option<u32> {
        self.open_slots()
            .into_iter()
            .find(|s| s.key.task_id.as_str() == task && s.owner.keeper.is_some())
            .map(|s| s.owner.runner.pid)
    }

    /// Waits for a keeper to hold `task`'s slot; its pid.
    pub fn wait_for_keeper(&self, task: &str) -> u32 {
        let mut pid = None;
        wait_until(Duration::from_secs(20), "a keeper to hold the task", || {
            pid = self.keeper_of(task);
            pid.is_some()
        });
        pid.unwrap_or_default()
    }

    /// The most executors that ever ran at once, and how many run now.
    pub fn holders(&self) -> (i64, i64) {
        inflight_e2e::executor_holders(self.dir.path())
    }

    pub fn signal(&mut self, index: usize, signal: i32) {
        inflight_e2e::send_signal(self.children[index].id(), signal);
    }

    pub fn wait(&mut self, index: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.children[index].try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Keepers outlive their runners by design, and their executors
        // with them: end whatever still runs for this world (every process
        // it started carries its E2E_DIR).
        inflight_e2e::kill_processes_of(self.dir.path());
    }
}

/// A holder on this host, of role `goal`.
fn local_owner(
    holder: ledger_core::ProcessIdentity,
    project: Option<ProjectRef>,
    keeper: Option<u32>,
) -> ledger_core::Owner {
    let read = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_owned();
    ledger_core::Owner {
        host: read("/proc/sys/kernel/hostname"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        runner: holder,
        executor: None,
        role: Some("goal".into()),
        project,
        keeper,
        outcome: None,
        title: None,
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
/// A TCP proxy on loopback in front of `target`, which can stop forwarding
/// (connections stay open and go silent, as across a network partition)
/// and resume.
pub struct Partition {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    pub fn to(target: u16) -> Self {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let cut = flag.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // While cut, what was sent waits: nothing gets
                            // through until the link is back.
                            while cut.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { port, cut }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One throwaway PostgreSQL for the whole e2e binary; each world on it has
/// a schema of its own.
pub fn postgres_server() -> &'static ledger_postgres::test_server::TestServer {
    static SERVER: std::sync::OnceLock<ledger_postgres::test_server::TestServer> =
        std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let server =
            ledger_postgres::test_server::TestServer::start().unwrap_or_else(|e| panic!("{e}"));
        server.create_database("inflight").unwrap();
        server
    })
}

/// A PgBouncer in transaction mode in front of [`postgres_server`], with
/// a pool of 4 server connections, so that clients share them.
pub fn pg_bouncer() -> &'static ledger_postgres::test_server::TestBouncer {
    static BOUNCER: std::sync::OnceLock<ledger_postgres::test_server::TestBouncer> =
        std::sync::OnceLock::new();
    BOUNCER.get_or_init(|| {
        postgres_server()
            .bouncer(4)
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first comment on `task` containing `needle`, waiting for it: a
/// runner moves a task in Plane before it comments, so a test that saw the
/// new state may still be ahead of the comment.
pub fn comment_containing(world: &World, task: &str, needle: &str) -> String {
    let mut found = None;
    wait_until(
        Duration::from_secs(10),
        &format!("a comment containing {needle:?}"),
        || {
            found = world
                .sim
                .comments(task)
                .into_iter()
                .find(|c| c.contains(needle));
            found.is_some()
        },
    );
    found.unwrap_or_default()
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// The finish reasons of `task`'s runs (every task's, for `None`), in
/// order, a reclaim as `reconciled RULE`.
pub fn finishes(world: &World, task: Option<&str>) -> Vec<String> {
    events_json(world)
        .iter()
        .filter(|e| e["kind"] == "finished" && task.is_none_or(|t| e["task_id"] == t))
        .map(|e| {
            format!(
                "{}{}",
                e["reason"].as_str().unwrap_or_default(),
                e["rule"]
                    .as_str()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

pub fn events_json(world: &World) -> Vec<Value> {
    let out = world.watchdog(&["events", "--json"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
