//! `cargo xtask bench`: the benchmarks, alone or side by side with another
//! revision's. Figures from two runs on different days say little on a
//! noisy 2-core machine; figures taken in one sitting, the two revisions'
//! runs interleaved, say whether a change moved them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, cargo, output, run, workspace_root};

/// Benchmark name, package, bench target.
const BENCHES: &[(&str, &str, &str)] = &[
    ("ledger", "ledger-core", "ledger"),
    // The PostgreSQL store beside redb, on a throwaway server.
    ("ledger", "ledger-postgres", "postgres"),
    ("reconcile", "runtime", "reconcile"),
    // The operator's window on 1,000,000 events, on both stores.
    ("window", "watchdog-bin", "window"),
    ("e2e", "inflight-e2e", "e2e"),
    // The fleet's Plane budget: idle cost, pickup, requests per dispatch.
    ("fleet", "inflight-e2e", "fleet"),
    // 200 runners and 50 watchdogs through PgBouncer on one PostgreSQL:
    // about 3 minutes.
    ("fleet-pg", "inflight-e2e", "fleet_pg"),
    // 300 tasks through one 60-a-minute budget: about 25 minutes.
    ("budget", "inflight-e2e", "budget"),
];

/// `bench [--against REV] [--rounds N] [NAME]`.
pub(crate) fn command(args: &[String]) -> Result {
    let mut against = None;
    let mut rounds = 2usize;
    let mut only = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--against" => against = Some(args.next().ok_or("--against needs a revision")?),
            "--rounds" => {
                let n = args.next().ok_or("--rounds needs a number")?;
                rounds = n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--rounds {n:?}: not a positive number"))?;
            }
            name if !name.starts_with('-') && only.is_none() => only = Some(name),
            other => return Err(format!("bench: unexpected argument {other:?}")),
        }
    }
    let chosen = choose(only)?;
    match against {
        None => alone(&chosen),
        Some(rev) => side_by_side(&chosen, rev, rounds),
    }
}

/// Run only when named: it takes about 25 minutes.
const ONLY_BY_NAME: &[&str] = &["budget"];

fn choose(only: Option<&str>) -> Result<Vec<(&'static str, &'static str, &'static str)>> {
    let chosen: Vec<_> = BENCHES
        .iter()
        .filter(|(name, _, _)| match only {
            Some(o) => o == *name,
            None => !ONLY_BY_NAME.contains(name),
        })
        .copied()
        .collect();
    if chosen.is_empty() {
        let mut names: Vec<_> = BENCHES.iter().map(|(n, _, _)| *n).collect();
        names.dedup();
        return Err(format!(
            "no benchmark named {:?}; there are: {}",
            only.unwrap_or(""),
            names.join(", ")
        ));
    }
    Ok(chosen)
}

/// A source tree to benchmark, and the target folder it builds into.
struct Tree {
    label: String,
    dir: PathBuf,
    target: Option<PathBuf>,
}

impl Tree {
    fn cargo(&self) -> Command {
        let mut c = cargo();
        c.current_dir(&self.dir);
        if let Some(target) = &self.target {
            c.env("CARGO_TARGET_DIR", target);
        }
        c
    }

    fn prepare(&self, chosen: &[(&str, &str, &str)]) -> Result {
        // The end-to-end benchmark spawns the release binaries.
        if chosen.iter().any(|(name, _, _)| *name == "e2e") {
            let mut bins = self.cargo();
            bins.args(["build", "--release", "--workspace", "--bins", "--locked"]);
            run(&format!("release binaries ({})", self.label), bins)?;
        }
        Ok(())
    }

    fn bench(&self, package: &str, target: &str) -> Result<String> {
        let mut c = self.cargo();
        c.args(["bench", "--locked", "-p", package, "--bench", target]);
        output(c).map_err(|e| format!("{}: {e}", self.label))
    }
}

fn here() -> Tree {
    Tree {
        label: "this tree".into(),
        dir: workspace_root(),
        target: None,
    }
}

/// Writes the report, and beside it (`target/bench-plots/`) the plots its
/// benchmarks printed the data of, embedded at its end.
fn write_report(report: &str) -> Result {
    let target = crate::target_dir();
    let plots = crate::plot::plots_in(report);
    let mut report = report.to_owned();
    if !plots.is_empty() {
        let dir = target.join("bench-plots");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        report.push_str("\n# Plots\n\n");
        for plot in &plots {
            let path = dir.join(format!("{}.svg", plot.name));
            std::fs::write(&path, crate::plot::svg(plot))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            report.push_str(&format!(
                "![{}](bench-plots/{}.svg)\n\n",
                plot.title, plot.name
            ));
            eprintln!("plot written to {}", path.display());
        }
    }
    let path = target.join("bench-report.md");
    std::fs::write(&path, report).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("\nreport written to {}", path.display());
    Ok(())
}

fn alone(chosen: &[(&str, &str, &str)]) -> Result {
    let tree = here();
    tree.prepare(chosen)?;
    let mut report = String::from("# inflight benchmarks\n\n");
    for (name, package, target) in chosen {
        eprintln!("\n==> bench {name}");
        let out = tree.bench(package, target)?;
        print!("{out}");
        report.push_str(&out);
        report.push('\n');
    }
    write_report(&report)
}

/// Checks `rev` out beside the workspace (a detached git worktree under
/// `target/`, built into its own target folder, kept for the next run),
/// then runs each benchmark `rounds` times on both trees, alternating, and
/// prints each measure's figures side by side with their ratio.
fn side_by_side(chosen: &[(&str, &str, &str)], rev: &str, rounds: usize) -> Result {
    let root = workspace_root();
    let commit = git(
        &root,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )
    .map_err(|e| format!("--against {rev:?}: not a revision of this repository ({e})"))?;
    let short = commit.get(..10).unwrap_or(&commit).to_owned();
    let base_dir = root.join("target/bench-against");
    let checkout = base_dir.join("src");
    if checkout.exists() {
        git(&checkout, &["checkout", "--quiet", "--detach", &commit])?;
    } else {
        git(
            &root,
            &[
                "worktree",
                "add",
                "--quiet",
                "--detach",
                &checkout.to_string_lossy(),
                &commit,
            ],
        )?;
    }
    let base = Tree {
        label: short.clone(),
        dir: checkout,
        target: Some(base_dir.join("target")),
    };
    let head = here();
    base.prepare(chosen)?;
    head.prepare(chosen)?;
    let mut report = format!(
        "# inflight benchmarks: {short} against this tree\n\n{rounds} round(s) each, interleaved ({short}, this tree, …). \
         Each cell lists every round's figure; the ratio is of their means (this tree / {short}).\n\n"
    );
    for (name, package, target) in chosen {
        let mut figures: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            eprintln!("\n==> bench {name}, round {round} of {rounds}: {short}");
            figures.0.push(base.bench(package, target)?);
            eprintln!("==> bench {name}, round {round} of {rounds}: this tree");
            figures.1.push(head.bench(package, target)?);
        }
        let table = compare(name, &short, &figures.0, &figures.1);
        print!("{table}");
        report.push_str(&table);
        report.push('\n');
    }
    write_report(&report)
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let mut c = Command::new("git");
    c.current_dir(dir).args(args);
    Ok(output(c)?.trim().to_owned())
}

/// The rows of every markdown table in a benchmark's output: its first
/// cell (the measure) and its second (the figure).
fn rows(out: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut in_table = 0;
    for line in out.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = 0;
            continue;
        }
        in_table += 1;
        // The header and its separator.
        if in_table <= 2 {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if let [measure, figure, ..] = cells.as_slice() {
            rows.push(((*measure).to_owned(), (*figure).to_owned()));
        }
    }
    rows
}

/// A figure's leading number and the unit after it: `1.692 ms` is
/// `(1.692, "ms")`, `7.9x` is `(7.9, "x")`.
fn number(figure: &str) -> Option<(f64, String)> {
    let end = figure
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(figure.len());
    let value: f64 = figure.get(..end)?.replace(',', "").parse().ok()?;
    let unit = figure
        .get(end..)?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    Some((value, unit))
}

fn mean(figures: &[String]) -> Option<(f64, String)> {
    let parsed: Vec<(f64, String)> = figures.iter().filter_map(|f| number(f)).collect();
    let unit = parsed.first()?.1.clone();
    if parsed.len() != figures.len() || parsed.iter().any(|(_, u)| *u != unit) {
        return None;
    }
    Some((
        parsed.iter().map(|(v, _)| v).sum::<f64>() / parsed.len() as f64,
        unit,
    ))
}

/// One table: each measure of the benchmark, the base's figures, this
/// tree's, and the ratio of their means.
fn compare(name: &str, base_label: &str, base: &[String], head: &[String]) -> String {
    let base_rows: Vec<Vec<(String, String)>> = base.iter().map(|o| rows(o)).collect();
    let head_rows: Vec<Vec<(String, String)>> = head.iter().map(|o| rows(o)).collect();
    let figures_of = |runs: &[Vec<(String, String)>], measure: &str| -> Vec<String> {
        runs.iter()
            .filter_map(|rows| rows.iter().find(|(m, _)| m == measure))
            .map(|(_, f)| f.clone())
            .collect()
    };
    let mut measures: Vec<String> = Vec::new();
    for (measure, _) in base_rows.iter().chain(&head_rows).flatten() {
        if !measures.contains(measure) {
            measures.push(measure.clone());
        }
    }
    let mut table = format!(
        "## {name}\n\n| measure | {base_label} | this tree | this tree / {base_label} |\n|---|---|---|---|\n"
    );
    for measure in &measures {
        let b = figures_of(&base_rows, measure);
        let h = figures_of(&head_rows, measure);
        let ratio = match (mean(&b), mean(&h)) {
            (Some((bv, bu)), Some((hv, hu))) if bu == hu && bv > 0.0 => format!("{:.2}", hv / bv),
            _ => String::new(),
        };
        let show = |v: &[String]| {
            if v.is_empty() {
                "(absent)".to_owned()
            } else {
                v.join(" · ")
            }
        };
        table.push_str(&format!(
            "| {measure} | {} | {} | {ratio} |\n",
            show(&b),
            show(&h)
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "# ledger-core benchmark\n\n| measure | figure | target |\n|---|---|---|\n\
        | durable cycle (2000 cycles) | 1.692 ms | within 1 ms |\n| speed-up | 7.9x | |\n\
        | 4 processes | 1,219 commits/s (610 cycles/s) | |\n";

    #[test]
    fn help_names_every_benchmark_and_the_one_run_only_by_name() {
        let help = crate::HELP.split_whitespace().collect::<Vec<_>>().join(" ");
        let start = help.find("bench [").unwrap();
        let end = help[start..].find("demo [").unwrap() + start;
        let paragraph = &help[start..end];
        for (name, _, _) in BENCHES {
            assert!(
                paragraph.contains(name),
                "cargo xtask help does not name the benchmark {name}: {paragraph}"
            );
        }
        for name in ONLY_BY_NAME {
            assert!(paragraph.contains(&format!("{name}: about 25 minutes, so only when named")));
        }
    }

    #[test]
    fn a_benchmark_table_is_read_row_by_row() {
        assert_eq!(
            rows(OUT),
            [
                ("durable cycle (2000 cycles)".into(), "1.692 ms".into()),
                ("speed-up".into(), "7.9x".into()),
                (
                    "4 processes".into(),
                    "1,219 commits/s (610 cycles/s)".into()
                ),
            ]
        );
        assert_eq!(number("1.692 ms"), Some((1.692, "ms".into())));
        assert_eq!(number("7.9x"), Some((7.9, "x".into())));
        assert_eq!(
            number("1,219 commits/s (610 cycles/s)"),
            Some((1219.0, "commits/s".into()))
        );
        assert_eq!(number("n/a"), None);
    }

    #[test]
    fn side_by_side_figures_get_the_ratio_of_their_means() {
        let base = [OUT.to_owned(), OUT.replace("1.692 ms", "1.708 ms")];
        let head = [
            OUT.replace("1.692 ms", "0.850 ms"),
            OUT.replace("1.692 ms", "0.850 ms"),
        ];
        let table = compare("ledger", "abc", &base, &head);
        assert!(
            table.contains(
                "| durable cycle (2000 cycles) | 1.692 ms · 1.708 ms | 0.850 ms · 0.850 ms | 0.50 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| speed-up | 7.9x · 7.9x | 7.9x · 7.9x | 1.00 |"),
            "{table}"
        );
    }

    #[test]
    fn figures_in_different_units_get_no_ratio() {
        let head = [OUT.replace("1.692 ms", "1.1 s")];
        let table = compare("ledger", "abc", &[OUT.to_owned()], &head);
        assert!(table.contains("| 1.692 ms | 1.1 s |  |"), "{table}");
    }
}
