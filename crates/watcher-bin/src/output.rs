//! The executor's output: forwarded to the runner's log line by line, and
//! the last few lines kept, sanitised, for the comment on a failed run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;

/// Lines kept for a comment.
const TAIL_LINES: usize = 20;
/// Characters kept of each line.
const LINE_CHARS: usize = 200;

/// The end of an executor's output.
#[derive(Debug, Clone, Default)]
pub struct OutputTail(Arc<Mutex<VecDeque<String>>>);

impl OutputTail {
    /// Takes the child's piped stdout and stderr and follows them until the
    /// child closes them.
    pub fn follow(child: &mut Child, task: &str) -> Self {
        let tail = Self::default();
        if let Some(stdout) = child.stdout.take() {
            tail.spawn_reader(stdout, task.to_owned(), "stdout");
        }
        if let Some(stderr) = child.stderr.take() {
            tail.spawn_reader(stderr, task.to_owned(), "stderr");
        }
        tail
    }

    fn spawn_reader(
        &self,
        stream: impl AsyncRead + Unpin + Send + 'static,
        task: String,
        name: &'static str,
    ) {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = sanitise(&line);
                tracing::info!(target: "executor", task = %task, stream = name, "{line}");
                let mut kept = tail.0.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == TAIL_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
    }

    /// The kept lines, oldest first; `None` when there were none.
    pub fn render(&self) -> Option<String> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (!kept.is_empty()).then(|| kept.iter().cloned().collect::<Vec<_>>().join("\n"))
    }
}

/// Drops terminal escape sequences and control characters, and bounds the
/// length: executor output goes into Plane comments and log lines.
pub fn sanitise(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences: ESC [ … final byte in @..~.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        out.push(c);
        if out.chars().count() >= LINE_CHARS {
            out.push('…');
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_dropped_and_length_bounded() {
        assert_eq!(sanitise("\u{1b}[31mred\u{1b}[0m done\u{7}"), "red done");
        let long = "x".repeat(500);
        assert_eq!(sanitise(&long).chars().count(), LINE_CHARS + 1);
    }
}
