//! The runtime model of a run: everything [`crate::execute`] needs, already validated. Built
//! from command-line flags and a scenario file by [`crate::args`], or directly by tests.

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::{BaseUrl, Header};
use crate::ids::IdPattern;
use crate::schedule::Schedule;
use crate::target::{Endpoint, Targets};
use crate::thresholds::Threshold;
use crate::units::format_duration;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SEED: u64 = 1;
/// Enough for 10,000 requests/s against a server that stalls for a second; beyond it requests
/// are counted as dropped instead of piling up without bound.
pub const DEFAULT_MAX_INFLIGHT: usize = 10_000;
/// Well under the 20,000 open files a process may have here, and under the ephemeral ports.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_000;

/// How load is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// Requests start on the schedule whatever the responses do.
    Open(Schedule),
    /// `connections` loops, each sending its next request when the last one finished: the
    /// server sets the pace, for "how many requests/s can it do" runs.
    Closed {
        connections: usize,
        duration: Duration,
    },
}

impl Load {
    pub fn duration(&self) -> Duration {
        match self {
            Load::Open(s) => s.duration(),
            Load::Closed { duration, .. } => *duration,
        }
    }
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub url: BaseUrl,
    /// The scenario the plan came from, for the report.
    pub scenario: Option<String>,
    pub load: Load,
    pub targets: Targets,
    pub ids: IdPattern,
    pub seed: u64,
    pub timeout: Duration,
    pub max_inflight: usize,
    pub max_connections: usize,
    pub headers: Vec<Header>,
    pub thresholds: Vec<Threshold>,
    pub edge_metrics: Option<String>,
    /// Print a line per second to stderr while running.
    pub progress: bool,
}

impl Plan {
    /// A plan with the defaults: the `list` endpoint, ids `seq:1..100000`, seed 1.
    pub fn new(url: BaseUrl, load: Load) -> Self {
        let list = crate::target::BUILTIN_ENDPOINTS[0];
        Plan {
            url,
            scenario: None,
            load,
            targets: Targets::single(
                Endpoint::parse(list.0, list.1).expect("built-in endpoints parse"),
            ),
            ids: IdPattern::default(),
            seed: DEFAULT_SEED,
            timeout: DEFAULT_TIMEOUT,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            headers: Vec::new(),
            thresholds: Vec::new(),
            edge_metrics: None,
            progress: false,
        }
    }

    /// The plan in a few lines, for `--check` and the top of the report.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let load = match &self.load {
            Load::Open(s) if s.stages.len() == 1 && s.stages[0].from_rps == s.stages[0].to_rps => {
                format!(
                    "open model, {} req/s for {} ({} requests)",
                    s.stages[0].from_rps,
                    format_duration(s.duration()),
                    s.requests()
                )
            }
            Load::Open(s) => format!(
                "open model, stages {s} ({} requests over {})",
                s.requests(),
                format_duration(s.duration())
            ),
            Load::Closed {
                connections,
                duration,
            } => format!(
                "closed model, {connections} connections for {}",
                format_duration(*duration)
            ),
        };
        let _ = writeln!(out, "{load} against {}", self.url.text);
        if let Some(s) = &self.scenario {
            let _ = writeln!(out, "scenario   {s}");
        }
        for (e, w) in self.targets.endpoints.iter().zip(&self.targets.weights) {
            let _ = writeln!(out, "target     {}={w}  {}", e.name, e.describe());
        }
        let _ = writeln!(out, "ids        {} (seed {})", self.ids, self.seed);
        let _ = writeln!(
            out,
            "limits     timeout {}, max in-flight {}, max connections {}",
            format_duration(self.timeout),
            self.max_inflight,
            self.max_connections
        );
        for t in &self.thresholds {
            let _ = writeln!(out, "threshold  {t}");
        }
        if let Some(e) = &self.edge_metrics {
            let _ = writeln!(out, "edge       {e}");
        }
        out
    }
}
