//! A process killed at any moment leaves a sound ledger with every
//! acknowledged operation in it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use ledger_core::*;

use crate::support::*;

const KILLS: u64 = 24;

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let (_dir, path) = temp_ledger();
    let mut rng = seeded_rng();
    let mut acknowledged_starts = HashSet::new();
    let mut acknowledged_finishes = HashSet::new();
    for life in 0..KILLS {
        let mut child = child("crash_loop", &path)
            .env("LEDGER_IT_LIFE", life.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // Wait until the child is past start-up and committing, then kill it
        // at a random moment of its loop.
        std::thread::sleep(Duration::from_millis(60 + rng.u64(..120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut ops = 0;
        for line in lines {
            if let Some(run) = line.strip_prefix("ADMITTED ") {
                acknowledged_starts.insert(run.to_owned());
                ops += 1;
            } else if let Some(run) = line.strip_prefix("FINISHED ") {
                acknowledged_finishes.insert(run.to_owned());
                ops += 1;
            }
        }
        assert!(
            ops > 0,
            "life {life}: the child was killed before it did anything"
        );

        let ledger = Ledger::open(&path).unwrap_or_else(|e| panic!("after kill {life}: {e}"));
        let report = ledger.verify().unwrap();
        assert!(
            report.is_sound(),
            "after kill {life}: {:?}",
            report.problems
        );
        let events = all_events(&ledger);
        let mut started = HashSet::new();
        let mut finished = HashSet::new();
        for event in &events {
            match &event.kind {
                EventKind::Started { run_id, .. } => started.insert(run_id.to_string()),
                EventKind::Finished { run_id, .. } => finished.insert(run_id.to_string()),
                _ => false,
            };
        }
        let lost_starts: Vec<_> = acknowledged_starts.difference(&started).collect();
        let lost_finishes: Vec<_> = acknowledged_finishes.difference(&finished).collect();
        assert!(
            lost_starts.is_empty(),
            "after kill {life}: lost starts {lost_starts:?}"
        );
        assert!(
            lost_finishes.is_empty(),
            "after kill {life}: lost finishes {lost_finishes:?}"
        );
        // At most the one dispatch that was in progress is still open, and
        // it is one whose finish was never acknowledged.
        let open = ledger.open_slots().unwrap();
        assert!(open.len() <= 1, "after kill {life}: {open:?}");
        for slot in open {
            assert!(!acknowledged_finishes.contains(slot.run_id.as_str()));
            // Release it the way an operator would, so the next life starts
            // from an idle backend.
            ledger
                .finish(
                    &slot.key,
                    Some(&slot.run_id),
                    FinishReason::ReleasedByOperator,
                    T0,
                )
                .unwrap();
        }
    }
    eprintln!(
        "{KILLS} kills; {} starts and {} finishes acknowledged, all present",
        acknowledged_starts.len(),
        acknowledged_finishes.len()
    );
}
