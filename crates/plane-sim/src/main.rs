//! `plane-sim`: run the Plane simulator as a server, for the demo and for
//! trying inflight without a Plane.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use plane_sim::{ItemSeed, PlaneSim, SimConfig};
use serde::Deserialize;

/// A Plane-compatible API server with in-memory data, for tests and demos.
///
/// It serves Plane's REST API v1 routes that inflight uses, in both route
/// families, with Plane's response shapes, pagination, API-key checks and
/// rate limit. Data lives in memory and is lost when it stops.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address to bind. Loopback by default: the simulator has no TLS.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// A JSON file with the workspace, project, API key and work items to
    /// start with; its format is in docs/operations.md, "Trying it without
    /// a Plane".
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Requests allowed per key per minute (Plane's default is 60; 0 turns
    /// the limit off).
    #[arg(long, default_value_t = 60)]
    rate_limit: u32,
    /// Behave like Plane before 1.1 (no /work-items/ routes).
    #[arg(long)]
    old_server: bool,
}

/// The seed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    #[serde(default = "default_workspace")]
    workspace: String,
    project_id: Option<String>,
    #[serde(default = "default_identifier")]
    project_identifier: String,
    api_key: Option<String>,
    #[serde(default)]
    states: Vec<SeedState>,
    #[serde(default)]
    work_items: Vec<SeedItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedState {
    name: String,
    group: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedItem {
    name: String,
    state: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
}

fn default_workspace() -> String {
    "acme".into()
}

fn default_identifier() -> String {
    "ROCK".into()
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("plane-sim: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let seed = match &args.seed {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(
                serde_json::from_str::<Seed>(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let mut config = SimConfig {
        rate_limit: (args.rate_limit > 0).then_some((args.rate_limit, Duration::from_secs(60))),
        old_server: args.old_server,
        ..SimConfig::default()
    };
    if let Some(seed) = &seed {
        config.workspace = seed.workspace.clone();
        config.project_id = seed.project_id.clone();
        config.project_identifier = seed.project_identifier.clone();
        if let Some(key) = &seed.api_key {
            config.api_keys = vec![key.clone()];
        }
    }
    let sim = PlaneSim::start_on(SocketAddr::new(args.bind, args.port), config)
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    if let Some(seed) = seed {
        for state in seed.states {
            if sim
                .states()
                .iter()
                .all(|s| !s.name.eq_ignore_ascii_case(&state.name))
            {
                sim.add_state(&state.name, &state.group);
            }
        }
        for item in seed.work_items {
            if let Some(state) = &item.state
                && sim
                    .states()
                    .iter()
                    .all(|s| !s.name.eq_ignore_ascii_case(state))
            {
                return Err(format!(
                    "seed: work item {:?} is in unknown state {state:?}",
                    item.name
                ));
            }
            sim.add_work_item_with(ItemSeed {
                name: item.name,
                state: item.state,
                labels: item.labels,
                ..ItemSeed::default()
            });
        }
    }
    // One line on stdout that a script can read.
    println!(
        "{{\"base_url\": \"{}\", \"workspace\": \"{}\", \"project_id\": \"{}\"}}",
        sim.base_url(),
        sim.workspace(),
        sim.project_id()
    );
    eprintln!("plane-sim listening on {} (Ctrl-C to stop)", sim.base_url());
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}
