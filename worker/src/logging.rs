//! The log on stderr: `tracing` events as text (the default) or as one JSON object a line
//! (`shoal worker --log-format json`, docs/observability.md). `RUST_LOG` chooses what is logged
//! (default `warn`).
//!
//! Invariant: the subscriber is installed once per process, before the command does anything
//! that logs; `shoal worker` installs it after reading its settings (the format may come from the
//! config file), every other command at once, as text.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines: time, level, spans with their fields, message.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (with `message`), `span`
    /// (the innermost span) and `spans` (all open spans, outermost first, with their fields:
    /// `peer.me`, `job.id`, `task.job`/`task.task`/`task.attempt`).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{s}` is not a log format: expected text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the process's subscriber: `RUST_LOG`'s filter (else `warn`), to stderr, in `format`.
/// A second call (a subscriber is already installed) changes nothing.
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn formats_parse_in_any_case_and_print_back() {
        assert_eq!("JSON".parse(), Ok(LogFormat::Json));
        assert_eq!(" text".parse(), Ok(LogFormat::Text));
        let e = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(e.contains("`yaml`") && e.contains("text or json"), "{e}");
        assert_eq!(LogFormat::Json.to_string(), "json");
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }
}
