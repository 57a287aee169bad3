//! `cargo xtask bench fleet-pg`: a fleet on one PostgreSQL behind PgBouncer.
//!
//! One PostgreSQL, one PgBouncer in transaction mode (40 server
//! connections), plane-sim, and 50 hosts (`INFLIGHT_HOST`), each running
//! 4 runners (one per role) and a `watchdog run`: 200 runners and 50
//! watchdogs, every one of them a client of the pooler. The board keeps
//! them busy (finished tasks go back to their claim state) under one
//! backend capped at 40 and a global cap; executors take 1 s; runners look
//! at the board every 30 s (their default), watchdogs scan every 5 s.
//!
//! Reports the server connections used, admissions and lease renewals per
//! second, the admission latency the runners measured (p50 and p99, from
//! their own histograms), how busy PostgreSQL's processes kept the CPUs,
//! and whether the cap ever held more executors than it allows (counted
//! by the executors, outside the ledger). Then kills 10 hosts whole
//! (runners, keepers, executors, watchdog; SIGKILL) and reports how long
//! until the other hosts' watchdogs have reclaimed their slots
//! (`LEASE_EXPIRED_CLEAR`, after the lease and the grace). Finally drains
//! the board and checks nothing is left open.
//!
//! Uses the release binaries; prints figures and the plot of admission
//! latency and server connections over time; asserts nothing.

#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ledger_postgres::test_server::TestServer;
use support::*;

const HOSTS: usize = 50;
const KILLED: usize = 10;
const ROLES: [Role; 4] = [
    Role::new("r1", "Ready 1"),
    Role::new("r2", "Ready 2"),
    Role::new("r3", "Ready 3"),
    Role::new("r4", "Ready 4"),
];
const TASKS_PER_ROLE: usize = 60;
/// PgBouncer's server connections for the fleet's database.
const POOL: u32 = 40;
const CAP: u32 = 40;
const GLOBAL_CAP: u32 = 60;
const LEASE_SECS: u64 = 45;
const RENEW_SECS: u64 = 10;
const GRACE_SECS: u64 = 2;
/// How often each runner looks at the board (the default without
/// webhooks; 300 s with them), and each watchdog scans. With the lease
/// and its renewals, the PostgreSQL store's defaults (operations.md).
const POLL_SECS: u64 = 30;
const SCAN_SECS: u64 = 5;
/// The fleet's processes' niceness (see `main`).
const NICE: i32 = 10;
/// How long the fleet runs before the measured minute, and that minute.
const WARM_UP: Duration = Duration::from_secs(30);
const MEASURED: Duration = Duration::from_secs(60);
/// How often the sampler looks.
const TICK: Duration = Duration::from_secs(5);

fn main() {
    let server = TestServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.create_database("inflight").unwrap();
    let bouncer = server.bouncer(POOL).unwrap_or_else(|e| panic!("{e}"));
    let mut world = World::with_executor_env(CAP, &ROLES, &[("E2E_SLEEP_MS", "1000")])
        .on_postgres_through(&bouncer);
    world.edit_config("lease_secs = 6", &format!("lease_secs = {LEASE_SECS}"));
    world.edit_config("renew_secs = 1", &format!("renew_secs = {RENEW_SECS}"));
    world.edit_config("grace_secs = 2", &format!("grace_secs = {GRACE_SECS}"));
    world.edit_config(
        "poll_interval_secs = 1",
        &format!("poll_interval_secs = {POLL_SECS}"),
    );
    // The simulator has no limit: Plane's budget is not what is measured
    // (every request still takes from the shared budget in the ledger).
    world.edit_config(
        "rate_limit_per_minute = 6000",
        "rate_limit_per_minute = 60000",
    );
    world.edit_config(
        "max_concurrent = 8",
        &format!("max_concurrent = {GLOBAL_CAP}"),
    );
    // On this one machine the fleet's 250 processes share two cores with
    // the database, which in a fleet has a host of its own: they run at a
    // lower priority, so that a database process holding a cap row's lock
    // is not put behind them mid-commit (`FLEET_PG_NICE=0` to see it be).
    world.nice = std::env::var("FLEET_PG_NICE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(NICE);
    let schema = world.pg_options().schema;
    // The schema, made once before 250 processes open it.
    drop(world.pg());

    let mut tasks: Vec<(String, &'static str)> = Vec::new();
    for role in &ROLES {
        for n in 0..TASKS_PER_ROLE {
            let id = world
                .sim
                .add_work_item(&format!("{} task {n}", role.name), role.claim_state);
            tasks.push((id, role.claim_state));
        }
    }

    // 200 runners, each with its metrics on a port of its own, and 50
    // watchdogs: host by host.
    let started = Instant::now();
    let mut metrics_ports = Vec::new();
    let mut by_host: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for h in 0..HOSTS {
        let host = format!("h{h:02}");
        for role in &ROLES {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let address = format!("127.0.0.1:{port}");
            let index = world.spawn(
                Some(&host),
                "watcher",
                &[
                    "--role",
                    role.name,
                    "--log-format",
                    "json",
                    "--metrics-addr",
                    &address,
                ],
                &format!("{host}-{}", role.name),
            );
            metrics_ports.push((host.clone(), port));
            by_host.entry(host.clone()).or_default().push(index);
        }
        let interval = SCAN_SECS.to_string();
        let index = world.spawn(
            Some(&host),
            "watchdog",
            &[
                "--log-format",
                "json",
                "run",
                "--interval",
                &interval,
                "--apply",
            ],
            &format!("{host}-watchdog"),
        );
        by_host.entry(host.clone()).or_default().push(index);
    }
    eprintln!("fleet started in {:.1?}", started.elapsed());
    // A fleet that cannot start says why at once, not after the run.
    std::thread::sleep(Duration::from_secs(3));
    for (host, indexes) in by_host.iter().take(1) {
        for (index, tag) in indexes.iter().zip(
            ROLES
                .iter()
                .map(|r| format!("{host}-{}", r.name))
                .chain([format!("{host}-watchdog")]),
        ) {
            if let Some(status) = world.wait(*index, Duration::from_millis(50)) {
                panic!("{tag} exited ({status}): {}", world.log(&tag));
            }
        }
    }

    // Finished tasks go back to their claim state: the board stays busy.
    let mut fed = 0usize;
    let mut feed = |sim: &plane_sim::PlaneSim| {
        for (id, claim) in &tasks {
            if sim.state_of(id).as_deref() == Some("Done") {
                sim.set_state(id, claim);
                fed += 1;
            }
        }
    };
    let mut wait = |sim: &plane_sim::PlaneSim, how_long: Duration| {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            feed(sim);
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let mut sampler = Sampler::new(&server, &schema);
    let mut timeline: Vec<Sample> = Vec::new();
    let mut histograms: Vec<Scraped> = Vec::new();
    let deadline = Instant::now() + WARM_UP + MEASURED;
    let mut measured_from: Option<(Sample, Scraped)> = None;
    // Each scrape has a runner read the ledger for its gauges: the
    // timeline follows every tenth runner; the totals are every runner's,
    // at the measured minute's ends.
    let followed: Vec<(String, u16)> = metrics_ports.iter().step_by(10).cloned().collect();
    while Instant::now() < deadline {
        wait(&world.sim, TICK);
        if measured_from.is_none() && started.elapsed() >= WARM_UP {
            let histogram = scrape(&metrics_ports);
            measured_from = Some((sampler.sample(started), histogram));
        }
        let histogram = scrape(&followed);
        let sample = sampler.sample(started);
        eprintln!(
            "{:>5.0} s: {} server connections, {} admissions, {} open",
            sample.at, sample.connections, sample.started, sample.open
        );
        timeline.push(sample);
        histograms.push(histogram);
    }
    let (from, from_histogram) = measured_from.expect("a sample after the warm-up");
    let to_histogram = scrape(&metrics_ports);
    let to = sampler.sample(started);
    let (most_held, _) = world.holders();

    // Ten hosts killed whole: those holding the most slots at a busy
    // moment, so that there is something to come back.
    let busy_from = Instant::now();
    while sampler.open() < i64::from(CAP) / 2 && busy_from.elapsed() < Duration::from_secs(30) {
        wait(&world.sim, Duration::from_millis(100));
    }
    let killed_hosts = sampler.busiest_hosts(KILLED);
    let held_before = sampler.held_by(&killed_hosts);
    let killed_at = Instant::now();
    let executors_killed = kill_hosts(&mut world, &by_host, &killed_hosts);
    forget_executors(&world, executors_killed);
    let mut back_after = None;
    while killed_at.elapsed() < Duration::from_secs(LEASE_SECS + GRACE_SECS + 60) {
        if sampler.held_by(&killed_hosts) == 0 {
            back_after = Some(killed_at.elapsed());
            break;
        }
        wait(&world.sim, Duration::from_millis(200));
    }

    // Drain: nothing new is fed (`wait` is not called again), every task
    // leaves its claim state, and what runs ends.
    for (id, _) in &tasks {
        if ROLES
            .iter()
            .any(|r| world.sim.state_of(id).as_deref() == Some(r.claim_state))
        {
            world.sim.set_state(id, "Blocked");
        }
    }
    let drained = Instant::now();
    while sampler.open() > 0 && drained.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let left_open = sampler.open();
    let (most_held_after, _) = world.holders();
    let running_after = executors_alive(&world);
    let busy = to.cpu_busy_since(&from);

    let seconds = to.at - from.at;
    let admissions = (to.started - from.started) as f64 / seconds;
    let measured = to_histogram.minus(&from_histogram);
    // The runners' own, counted; each keeper renews its slot once every
    // `renew_secs`, so the open slots over that interval.
    let runner_renewals = measured.renewals as f64 / seconds;
    let open = timeline
        .iter()
        .filter(|s| s.at >= from.at)
        .map(|s| s.open as f64)
        .sum::<f64>()
        / timeline.iter().filter(|s| s.at >= from.at).count().max(1) as f64;
    let keeper_renewals = open / RENEW_SECS as f64;
    let most_connections = timeline.iter().map(|s| s.connections).max().unwrap_or(0);

    println!("# fleet-pg benchmark");
    println!();
    println!(
        "{HOSTS} hosts × {} roles = {} runners and {HOSTS} `watchdog run`s, all through one PgBouncer \
         (transaction mode, `default_pool_size = {POOL}`) to one PostgreSQL, on this machine ({} cores); \
         one backend capped at {CAP}, a global cap of {GLOBAL_CAP}, executors of 1 s, lease {LEASE_SECS} s \
         renewed every {RENEW_SECS} s. Measured over {seconds:.0} s after {} s of warm-up.",
        ROLES.len(),
        HOSTS * ROLES.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        WARM_UP.as_secs()
    );
    println!();
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!("| server connections used, most seen | {most_connections} | at most 60 |");
    println!("| admissions per second | {admissions:.1} | |");
    println!(
        "| lease renewals per second: the runners' (counted) + the keepers' ({open:.0} slots open on average, one each per {RENEW_SECS} s) | {runner_renewals:.1} + {keeper_renewals:.1} | |"
    );
    println!(
        "| admission latency p50 / p99 (the runners' histograms, {} admissions and denials) | {} / {} | p99 under 50 ms |",
        measured.count,
        ms(measured.quantile(0.50)),
        ms(measured.quantile(0.99))
    );
    println!(
        "| PostgreSQL's processes / PgBouncer, share of the CPUs | {:.0}% / {:.0}% | |",
        busy.0 * 100.0,
        busy.1 * 100.0
    );
    println!(
        "| executors at once, most seen (cap {CAP}) | {most_held} | {CAP} at most: 0 violations |"
    );
    println!(
        "| {KILLED} hosts killed: their {held_before} slots all back after | {} | within lease + grace + one scan ({} s) |",
        back_after.map_or("not within the wait".to_owned(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
        LEASE_SECS + GRACE_SECS + SCAN_SECS
    );
    println!(
        "| after the drain: slots left open / executors running / most at once | {left_open} / {running_after} / {most_held_after} | 0 / 0 / {CAP} at most |"
    );
    println!("| tasks fed back to the board | {fed} | |");

    let points = |f: &dyn Fn(usize, &Sample) -> Option<f64>| -> Vec<serde_json::Value> {
        timeline
            .iter()
            .enumerate()
            .filter_map(|(i, s)| f(i, s).map(|y| serde_json::json!([s.at, y])))
            .collect()
    };
    let p99 = points(&|i, _| {
        let before = if i == 0 {
            Scraped::default()
        } else {
            histograms[i - 1].clone()
        };
        let interval = histograms[i].minus(&before);
        (interval.count > 0).then(|| interval.quantile(0.99).as_secs_f64() * 1000.0)
    });
    let connections = points(&|_, s| Some(s.connections as f64));
    let plot = serde_json::json!({
        "name": "fleet-pg-over-time", "kind": "line",
        "title": "200 runners through PgBouncer: admission p99 (ms) and server connections",
        "x": "seconds", "y": "ms / connections",
        "series": [
            {"name": "admission p99 (every tenth runner), ms", "points": p99},
            {"name": "server connections", "points": connections},
        ],
    });
    println!("\n<!-- plot {plot} -->");
    drop(world);
    drop(bouncer);
}

/// One look at the database and the CPUs.
#[derive(Clone, Debug)]
struct Sample {
    /// Seconds since the fleet started.
    at: f64,
    connections: i64,
    started: i64,
    open: i64,
    /// CPU ticks of PostgreSQL's processes, of PgBouncer, and of the
    /// whole machine.
    postgres_ticks: u64,
    bouncer_ticks: u64,
    total_ticks: u64,
}

/// A connection straight to the server (not through the pooler, not
/// counted among the fleet's).
struct Sampler {
    client: postgres::Client,
    schema: String,
}

impl Sampler {
    fn new(server: &TestServer, schema: &str) -> Self {
        Self {
            client: postgres::Client::connect(&server.url("inflight"), postgres::NoTls).unwrap(),
            schema: format!("\"{schema}\""),
        }
    }

    fn sample(&mut self, since: Instant) -> Sample {
        let s = &self.schema;
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM pg_stat_activity \
                              WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()), \
                            (SELECT count(*) FROM {s}.events WHERE kind = 'started'), \
                            (SELECT count(*) FROM {s}.open_slots)"
                ),
                &[],
            )
            .unwrap();
        let (postgres_ticks, bouncer_ticks) = process_ticks();
        Sample {
            at: since.elapsed().as_secs_f64(),
            connections: row.get(0),
            started: row.get(1),
            open: row.get(2),
            postgres_ticks,
            bouncer_ticks,
            total_ticks: machine_ticks(),
        }
    }

    fn held_by(&mut self, hosts: &[String]) -> i64 {
        let s = &self.schema;
        self.client
            .query_one(
                &format!("SELECT count(*) FROM {s}.open_slots WHERE host = ANY($1)"),
                &[&hosts],
            )
            .unwrap()
            .get(0)
    }

    /// `n` hosts, those holding the most slots first.
    fn busiest_hosts(&mut self, n: usize) -> Vec<String> {
        let s = &self.schema;
        let mut hosts: Vec<String> = self
            .client
            .query(
                &format!("SELECT host FROM {s}.open_slots GROUP BY host ORDER BY count(*) DESC"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .take(n)
            .collect();
        for h in 0..HOSTS {
            let host = format!("h{h:02}");
            if hosts.len() < n && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        hosts
    }

    fn open(&mut self) -> i64 {
        let s = &self.schema;
        self.client
            .query_one(&format!("SELECT count(*) FROM {s}.open_slots"), &[])
            .unwrap()
            .get(0)
    }
}

impl Sample {
    /// The share of the machine's CPU time PostgreSQL's processes and
    /// PgBouncer used since `earlier`.
    fn cpu_busy_since(&self, earlier: &Sample) -> (f64, f64) {
        let total = self.total_ticks.saturating_sub(earlier.total_ticks).max(1) as f64;
        (
            self.postgres_ticks.saturating_sub(earlier.postgres_ticks) as f64 / total,
            self.bouncer_ticks.saturating_sub(earlier.bouncer_ticks) as f64 / total,
        )
    }
}

/// User and system ticks of every `postgres` process (the server and its
/// backends) and every `pgbouncer`, summed. Processes that ended between
/// two samples take their ticks with them: connections here live long.
fn process_ticks() -> (u64, u64) {
    let (mut postgres, mut bouncer) = (0, 0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after
        // the name.
        let ticks = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|n| n.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        match name {
            "postgres" => postgres += ticks,
            "pgbouncer" => bouncer += ticks,
            _ => {}
        }
    }
    (postgres, bouncer)
}

/// Every CPU's ticks since boot, from `/proc/stat`'s first line.
fn machine_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .map(|cpu| {
            cpu.split_whitespace()
                .skip(1)
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// What the runners' metrics say, summed over the runners scraped: their
/// admission histograms (`inflight_admit_duration_seconds`, cumulative
/// counts by upper bound) and their lease renewals
/// (`inflight_lease_renewals_total`).
#[derive(Clone, Debug, Default)]
struct Scraped {
    buckets: BTreeMap<u64, u64>,
    count: u64,
    renewals: u64,
}

impl Scraped {
    fn minus(&self, earlier: &Scraped) -> Scraped {
        Scraped {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| (*le, n - earlier.buckets.get(le).copied().unwrap_or(0)))
                .collect(),
            count: self.count - earlier.count,
            renewals: self.renewals - earlier.renewals,
        }
    }

    /// The `q` quantile, interpolated within its bucket as Prometheus's
    /// `histogram_quantile` does.
    fn quantile(&self, q: f64) -> Duration {
        let rank = q * self.count as f64;
        let mut below = (0u64, 0u64);
        for (le, n) in &self.buckets {
            if *n as f64 >= rank {
                let (lower, counted) = below;
                let within = (rank - counted as f64) / (n - counted).max(1) as f64;
                let nanos = lower as f64 + (*le - lower) as f64 * within;
                return Duration::from_nanos(nanos as u64);
            }
            below = (*le, *n);
        }
        Duration::from_nanos(below.0)
    }
}

/// The metrics of the runners at `ports`, summed (a runner that does not
/// answer adds nothing).
fn scrape(ports: &[(String, u16)]) -> Scraped {
    let mut sum = Scraped::default();
    for (_, port) in ports {
        let Some(text) = get_metrics(*port) else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("inflight_admit_duration_seconds_bucket{le=\"")
            else {
                if let Some(n) = line.strip_prefix("inflight_admit_duration_seconds_count ") {
                    sum.count += n.trim().parse::<f64>().unwrap_or(0.0) as u64;
                }
                if let Some(n) = line.strip_prefix("inflight_lease_renewals_total{outcome=\"ok\"} ")
                {
                    sum.renewals += n.trim().parse::<f64>().unwrap_or(0.0) as u64;
                }
                continue;
            };
            let Some((le, n)) = rest.split_once("\"} ") else {
                continue;
            };
            if le == "+Inf" {
                continue;
            }
            let le = (le.parse::<f64>().unwrap_or(0.0) * 1e9) as u64;
            *sum.buckets.entry(le).or_default() += n.trim().parse::<f64>().unwrap_or(0.0) as u64;
        }
    }
    sum
}

fn get_metrics(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// SIGKILLs every process of `hosts`: the runners and watchdogs this
/// benchmark started, and the keepers and executors that carry the host
/// in their environment. Returns how many executors died.
fn kill_hosts(
    world: &mut World,
    by_host: &BTreeMap<String, Vec<usize>>,
    hosts: &[String],
) -> usize {
    let mut executors = 0;
    for host in hosts {
        for index in by_host.get(host).into_iter().flatten() {
            world.signal(*index, libc::SIGKILL);
        }
        for pid in inflight_e2e::processes_with_env(&format!("INFLIGHT_HOST={host}")) {
            let name = inflight_e2e::process_name(pid);
            inflight_e2e::send_signal(pid, libc::SIGKILL);
            executors += usize::from(name == "e2e-executor");
        }
    }
    executors
}

/// The executor processes of this world still alive.
fn executors_alive(world: &World) -> usize {
    inflight_e2e::processes_with_env(&format!("E2E_DIR={}", world.dir.path().display()))
        .into_iter()
        .filter(|pid| inflight_e2e::process_name(*pid) == "e2e-executor")
        .count()
}

/// Takes executors killed with SIGKILL (which could not count themselves
/// out) off the executors' own count, under its lock.
fn forget_executors(world: &World, killed: usize) {
    let mut lock = fslock::LockFile::open(&world.path("holders.lock")).unwrap();
    lock.lock().unwrap();
    let path = world.path("holders");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut parts = text
        .split_whitespace()
        .map(|n| n.parse::<i64>().unwrap_or(0));
    let current = parts.next().unwrap_or(0) - killed as i64;
    let most = parts.next().unwrap_or(0);
    std::fs::write(&path, format!("{current} {most}")).unwrap();
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
