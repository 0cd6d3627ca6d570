//! One logging setup for every role: a `[log]` section (`format`, `level`) and [`init`], which
//! installs a `tracing` subscriber writing to stderr. Colour codes only when stderr is a
//! terminal: a file or journald gets plain lines.
//!
//! Records of the `log` crate (Pingora and other dependencies log through it) are not bridged
//! here: each role installs the bridge it needs (the edge demotes and rate-limits Pingora's
//! noise; see `reviews_proxy::logbridge`), or [`bridge_log_records`] for a plain one.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Multi-line, human-readable events, for a terminal.
    #[default]
    Pretty,
    /// One human-readable line per event.
    Compact,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `reviews_api=debug,sqlx=warn`); `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// Installs the global subscriber. Returns false when one was already installed (tests
/// starting several servers, `reviews up` running several roles in one process): the first
/// setup stays.
pub fn init(config: &LogConfig) -> bool {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match config.format {
        LogFormat::Pretty => tracing::subscriber::set_global_default(builder.finish()),
        LogFormat::Compact => tracing::subscriber::set_global_default(builder.compact().finish()),
        LogFormat::Json => {
            tracing::subscriber::set_global_default(builder.json().flatten_event(true).finish())
        }
    };
    installed.is_ok()
}

/// Forwards `log` records to `tracing` unchanged (for roles with no noise to tame).
pub fn bridge_log_records() {
    let _ = tracing_log::LogTracer::init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_section_reads_every_format_and_rejects_others() {
        for (text, format) in [
            ("pretty", LogFormat::Pretty),
            ("compact", LogFormat::Compact),
            ("json", LogFormat::Json),
        ] {
            let c: LogConfig = toml::from_str(&format!("format = \"{text}\"")).unwrap();
            assert_eq!(c.format, format);
        }
        let e = toml::from_str::<LogConfig>("format = \"xml\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml"), "{e}");
    }
}
