//! Logs on stderr through tracing, as text or JSON lines; `RUST_LOG` filters.

use std::str::FromStr;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl LogFormat {
    /// The word `--log-format` takes for it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (text or json)")),
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info`), on stderr,
/// so stdout carries only data. Text lines are coloured only when stderr is
/// a terminal: a file, a pipe or the journal gets plain text.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A panic is logged like everything else (a JSON line in JSON), and a
    // panic of the storage engine that becomes an error (a damaged ledger)
    // is not logged at all: the error says what happened, once.
    std::panic::set_hook(Box::new(|info| {
        if ledger_core::panic_is_contained() {
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(panic = %message, %location, "a bug: the process panicked (please report it)");
    }));
}

/// Says why a binary stops, on stderr: `NAME: why` in text, one JSON line
/// (level `ERROR`) in JSON, so that every line of a JSON log parses.
pub fn report_failure(name: &str, format: LogFormat, why: &dyn std::fmt::Display) {
    match format {
        LogFormat::Text => eprintln!("{name}: {why}"),
        LogFormat::Json => tracing::error!(error = %why, "{name}: {why}"),
    }
}
