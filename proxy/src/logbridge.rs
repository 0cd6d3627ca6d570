//! Pingora's `log` records, bridged into `tracing` with two corrections.
//!
//! - **Client behaviour is not an edge error.** Pingora logs a client that hangs up or lets
//!   its header deadline pass while sending a request header at ERROR, one line per
//!   connection: a slowloris wave of 1,500 connections is 1,500 ERROR lines. Those records
//!   become DEBUG and are counted in `edge_client_aborts_total{phase="header"}`. (Errors
//!   after the header reach the proxy's `suppress_error_log` hook, which does the same.)
//! - **Repeated warnings are rate-limited** per call site: at most [`BURST`] WARN/ERROR
//!   records from one line of Pingora per [`WINDOW`]; the rest are counted in
//!   `edge_log_suppressed_total`, and the next record from that line says how many were
//!   dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

use crate::metrics;

/// Records from one call site let through per window.
const BURST: u32 = 10;
const WINDOW: Duration = Duration::from_secs(10);

/// Messages Pingora writes when reading a request header failed: the client closed, reset or
/// was too slow (`downstream::Guarded` ends slow headers with a timeout error).
const CLIENT_HEADER_FAILURES: &[&str] = &["downstream session type:"];
/// Messages about writing to a client that went away.
const CLIENT_WRITE_FAILURES: &[&str] = &[
    "failed to send error response to downstream",
    "Error finish sending body to downstream",
];

struct Site {
    window_start: Instant,
    passed: u32,
    dropped: u64,
}

struct Bridge {
    sites: Mutex<HashMap<(&'static str, u32), Site>>,
}

/// Installs the bridge as the `log` logger (once per process; later calls do nothing) with
/// `max` as the most verbose level forwarded. Call it after the `tracing` subscriber is set.
pub fn install(max: LevelFilter) {
    let bridge = Bridge {
        sites: Mutex::new(HashMap::new()),
    };
    if log::set_boxed_logger(Box::new(bridge)).is_ok() {
        log::set_max_level(max);
    }
}

/// The most verbose `log` level the current `tracing` subscriber wants.
pub fn max_level_of_tracing() -> LevelFilter {
    match tracing::level_filters::LevelFilter::current().into_level() {
        None => LevelFilter::Off,
        Some(tracing::Level::ERROR) => LevelFilter::Error,
        Some(tracing::Level::WARN) => LevelFilter::Warn,
        Some(tracing::Level::INFO) => LevelFilter::Info,
        Some(tracing::Level::DEBUG) => LevelFilter::Debug,
        Some(tracing::Level::TRACE) => LevelFilter::Trace,
    }
}

/// Which client misbehaviour a record reports, if any.
fn client_side(message: &str) -> Option<&'static str> {
    if CLIENT_HEADER_FAILURES.iter().any(|m| message.contains(m)) {
        Some("header")
    } else if CLIENT_WRITE_FAILURES.iter().any(|m| message.contains(m)) {
        Some("response")
    } else {
        None
    }
}

impl Bridge {
    /// Whether a record from this call site may pass now; also returns how many were dropped
    /// since the last one that passed.
    fn admit(&self, record: &Record) -> (bool, u64) {
        let site = (
            record.file_static().unwrap_or("?"),
            record.line().unwrap_or(0),
        );
        let now = Instant::now();
        let mut sites = self.sites.lock();
        let s = sites.entry(site).or_insert(Site {
            window_start: now,
            passed: 0,
            dropped: 0,
        });
        if now.duration_since(s.window_start) >= WINDOW {
            s.window_start = now;
            s.passed = 0;
        }
        if s.passed < BURST {
            s.passed += 1;
            (true, std::mem::take(&mut s.dropped))
        } else {
            s.dropped += 1;
            (false, 0)
        }
    }
}

fn forward(record: &Record, level: Level, message: std::fmt::Arguments) {
    let _ = tracing_log::format_trace(
        &Record::builder()
            .level(level)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .args(message)
            .build(),
    );
}

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if record.level() > Level::Warn {
            let _ = tracing_log::format_trace(record);
            return;
        }
        let message = record.args().to_string();
        if let Some(phase) = client_side(&message) {
            metrics::CLIENT_ABORTS.with_label_values(&[phase]).inc();
            if log::max_level() >= LevelFilter::Debug {
                forward(record, Level::Debug, format_args!("{message}"));
            }
            return;
        }
        match self.admit(record) {
            (false, _) => metrics::LOG_SUPPRESSED.inc(),
            (true, 0) => forward(record, record.level(), format_args!("{message}")),
            (true, dropped) => forward(
                record,
                record.level(),
                format_args!("{message} ({dropped} more like this were suppressed)"),
            ),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_at(line: u32) -> Record<'static> {
        Record::builder()
            .level(Level::Error)
            .file_static(Some("pingora.rs"))
            .line(Some(line))
            .args(format_args!("boom"))
            .build()
    }

    #[test]
    fn a_call_site_passes_a_burst_per_window_then_is_counted() {
        let b = Bridge {
            sites: Mutex::new(HashMap::new()),
        };
        let passed = (0..25).filter(|_| b.admit(&record_at(7)).0).count();
        assert_eq!(passed, BURST as usize);
        assert!(
            b.admit(&record_at(8)).0,
            "another call site has its own budget"
        );
    }

    #[test]
    fn client_hang_ups_are_recognised_by_pingoras_messages() {
        assert_eq!(
            client_side(
                "Fail to proxy: ReadError context: while reading request headers, downstream session type: HTTP/1.1"
            ),
            Some("header")
        );
        assert_eq!(
            client_side("failed to send error response to downstream: Broken pipe"),
            Some("response")
        );
        assert_eq!(client_side("failed to acquire reusable stream"), None);
    }
}
