//! The report of a run: the figures the original tuning read (error rate, average response
//! time, loader.io's "throughput" ok/total) plus what makes them trustworthy (percentiles from
//! HDR histograms, latency from the scheduled start, dropped and late counts, the tester's CPU).
//!
//! Serialized as the `--json` output; `loadtest/report.schema.json` is its schema, and
//! [`SCHEMA_VERSION`] changes when a field changes meaning or goes away.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::ErrorKind;
use crate::cpu_time::CpuTime;
use crate::edge_metrics::EdgeReport;
use crate::plan::{Load, Plan};
use crate::record::{LATE_AFTER, Measurements};
use crate::thresholds::Verdict;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// `reviews-loadtest <version>`.
    pub tool: String,
    /// Start of the run, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    pub plan: PlanSummary,
    pub summary: Summary,
    pub errors: Errors,
    /// Responses by HTTP status code.
    pub status_codes: BTreeMap<String, u64>,
    pub latency: Latencies,
    /// Scheduled latency in log-spaced buckets, for the histogram chart.
    pub histogram: Vec<Bucket>,
    pub endpoints: Vec<EndpointSummary>,
    pub timeline: Vec<SecondSummary>,
    pub tester: Tester,
    pub edge: Option<EdgeReport>,
    pub thresholds: Vec<Verdict>,
    /// All thresholds held (true when there are none).
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub url: String,
    pub scenario: Option<String>,
    /// `open` (fixed arrival rate) or `closed` (fixed connections, each waiting for its reply).
    pub mode: String,
    pub stages: Vec<StageSummary>,
    pub connections: Option<u64>,
    pub duration_s: f64,
    pub targets: Vec<TargetSummary>,
    pub ids: String,
    pub seed: u64,
    pub timeout_s: f64,
    pub max_inflight: u64,
    pub max_connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    pub from_rps: f64,
    pub to_rps: f64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub name: String,
    pub method: String,
    pub path: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Seconds from the first scheduled start until the last response.
    pub elapsed_s: f64,
    /// Scheduled requests / planned duration (open model); null in the closed model.
    pub target_rps: Option<f64>,
    /// Sent requests (any outcome; dropped ones were never sent) / elapsed.
    pub achieved_rps: f64,
    /// Ok responses / elapsed.
    pub ok_rps: f64,
    /// Requests due (open) or started (closed), dropped ones included.
    pub scheduled: u64,
    /// Requests actually sent.
    pub sent: u64,
    /// Responses with status < 400.
    pub ok: u64,
    /// `scheduled − ok`: every error kind, dropped requests included.
    pub failed: u64,
    /// `ok/scheduled`, as loader.io printed "throughput".
    pub throughput: String,
    /// failed / scheduled (dropped requests count as failed: the schedule was not kept).
    pub error_rate: f64,
    /// Requests sent more than `late_after_ms` after their scheduled start.
    pub late: u64,
    pub late_after_ms: f64,
    pub bytes_received: u64,
    pub connections_opened: u64,
}

/// Counts by failure kind; `first` holds the first message of each kind seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub status: u64,
    pub timeout: u64,
    pub connect: u64,
    pub reset: u64,
    pub other: u64,
    pub dropped: u64,
    pub first: BTreeMap<String, String>,
}

impl Errors {
    pub fn count(&self, kind: ErrorKind) -> u64 {
        match kind {
            ErrorKind::Status => self.status,
            ErrorKind::Timeout => self.timeout,
            ErrorKind::Connect => self.connect,
            ErrorKind::Reset => self.reset,
            ErrorKind::Other => self.other,
            ErrorKind::Dropped => self.dropped,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// From the scheduled start to the last byte: coordinated-omission corrected.
    pub scheduled: LatencyStats,
    /// From the actual send to the last byte.
    pub sent: LatencyStats,
    /// From the scheduled start to the actual send: how far behind the tester was.
    pub lag: LatencyStats,
}

/// Summary of one HDR histogram, in milliseconds (microsecond resolution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub min_ms: f64,
    pub avg_ms: f64,
    pub stdev_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
    /// Further percentiles for the distribution table: `[percentile, ms]` pairs.
    pub percentiles: Vec<(f64, f64)>,
}

const TABLE_PERCENTILES: [f64; 11] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
];

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl LatencyStats {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencyStats {
                count: 0,
                min_ms: 0.0,
                avg_ms: 0.0,
                stdev_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                p99_9_ms: 0.0,
                max_ms: 0.0,
                percentiles: Vec::new(),
            };
        }
        let q = |p: f64| ms(h.value_at_quantile(p / 100.0));
        LatencyStats {
            count: h.len(),
            min_ms: ms(h.min()),
            avg_ms: h.mean() / 1000.0,
            stdev_ms: h.stdev() / 1000.0,
            p50_ms: q(50.0),
            p90_ms: q(90.0),
            p95_ms: q(95.0),
            p99_ms: q(99.0),
            p99_9_ms: q(99.9),
            max_ms: ms(h.max()),
            percentiles: TABLE_PERCENTILES.iter().map(|&p| (p, q(p))).collect(),
        }
    }

    /// A percentile from the stored ones; for thresholds on uncommon percentiles, the nearest
    /// stored percentile at or above it (never an optimistic value).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let named = [
            (50.0, self.p50_ms),
            (90.0, self.p90_ms),
            (95.0, self.p95_ms),
            (99.0, self.p99_ms),
            (99.9, self.p99_9_ms),
        ];
        named
            .iter()
            .copied()
            .chain(self.percentiles.iter().copied())
            .filter(|(q, _)| *q >= p)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(self.max_ms, |(_, v)| v)
    }
}

/// Count of responses with `low_ms < latency ≤ high_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub low_ms: f64,
    pub high_ms: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSummary {
    pub name: String,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One second of the run. Counts and latency belong to requests *scheduled* in that second;
/// `completed` counts responses that *finished* in it (the achieved rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondSummary {
    pub second: u64,
    pub scheduled: u64,
    pub ok: u64,
    pub failed: u64,
    pub dropped: u64,
    pub completed: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The generator's own cost: how much of the machine the load itself took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tester {
    pub cpu_user_s: Option<f64>,
    pub cpu_system_s: Option<f64>,
    /// (user + system) / elapsed: 1.0 is one core busy for the whole run.
    pub cpu_cores_used: Option<f64>,
    pub cores_available: u64,
    pub worker_threads: Option<u64>,
    /// Largest number of requests outstanding at once.
    pub peak_inflight: u64,
}

/// Inputs to [`Report::build`] that are not measurements.
#[derive(Debug)]
pub struct RunFacts {
    pub started_unix_ms: u64,
    pub elapsed: Duration,
    pub cpu: Option<CpuTime>,
    pub worker_threads: Option<usize>,
    pub peak_inflight: usize,
    pub connections_opened: u64,
    pub edge: Option<EdgeReport>,
}

impl Report {
    pub fn build(plan: &Plan, m: &Measurements, facts: RunFacts) -> Report {
        let t = &m.total;
        let elapsed = facts.elapsed.as_secs_f64().max(1e-9);
        let dropped = m.errors(ErrorKind::Dropped);
        let failed = m.failed();
        let scheduled = t.requests;
        let errors = Errors {
            status: m.errors(ErrorKind::Status),
            timeout: m.errors(ErrorKind::Timeout),
            connect: m.errors(ErrorKind::Connect),
            reset: m.errors(ErrorKind::Reset),
            other: m.errors(ErrorKind::Other),
            dropped,
            first: ErrorKind::ALL
                .iter()
                .filter_map(|k| {
                    t.first_error[k.index()]
                        .clone()
                        .map(|e| (k.name().to_string(), e))
                })
                .collect(),
        };
        let summary = Summary {
            elapsed_s: elapsed,
            target_rps: match &plan.load {
                Load::Open(s) => Some(s.mean_rps()),
                Load::Closed { .. } => None,
            },
            achieved_rps: (scheduled - dropped) as f64 / elapsed,
            ok_rps: t.ok as f64 / elapsed,
            scheduled,
            sent: scheduled - dropped,
            ok: t.ok,
            failed,
            throughput: format!("{}/{}", t.ok, scheduled),
            error_rate: if scheduled == 0 {
                0.0
            } else {
                failed as f64 / scheduled as f64
            },
            late: t.late,
            late_after_ms: LATE_AFTER.as_secs_f64() * 1000.0,
            bytes_received: t.bytes,
            connections_opened: facts.connections_opened,
        };
        let timeline = t
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let q = |p: f64| s.latency.as_ref().map(|h| ms(h.value_at_quantile(p)));
                SecondSummary {
                    second: i as u64,
                    scheduled: s.requests,
                    ok: s.ok,
                    failed: s.failed,
                    dropped: s.dropped,
                    completed: s.completed,
                    p50_ms: q(0.5),
                    p90_ms: q(0.9),
                    p99_ms: q(0.99),
                    max_ms: s.latency.as_ref().map(|h| ms(h.max())),
                }
            })
            .collect();
        let endpoints = plan
            .targets
            .endpoints
            .iter()
            .zip(&t.endpoints)
            .map(|(e, c)| EndpointSummary {
                name: e.name.clone(),
                requests: c.requests,
                ok: c.ok,
                failed: c.failed,
                p50_ms: ms(c.latency.value_at_quantile(0.5)),
                p99_ms: ms(c.latency.value_at_quantile(0.99)),
            })
            .collect();
        let cores_available = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let tester = Tester {
            cpu_user_s: facts.cpu.map(|c| c.user.as_secs_f64()),
            cpu_system_s: facts.cpu.map(|c| c.system.as_secs_f64()),
            cpu_cores_used: facts
                .cpu
                .map(|c| (c.user + c.system).as_secs_f64() / elapsed),
            cores_available,
            worker_threads: facts.worker_threads.map(|n| n as u64),
            peak_inflight: facts.peak_inflight as u64,
        };
        let mut report = Report {
            schema_version: SCHEMA_VERSION,
            tool: format!("reviews-loadtest {}", env!("CARGO_PKG_VERSION")),
            started_unix_ms: facts.started_unix_ms,
            plan: PlanSummary::of(plan),
            summary,
            errors,
            status_codes: t.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            latency: Latencies {
                scheduled: LatencyStats::from_histogram(&t.scheduled),
                sent: LatencyStats::from_histogram(&t.sent),
                lag: LatencyStats::from_histogram(&t.lag),
            },
            histogram: buckets(&t.scheduled),
            endpoints,
            timeline,
            tester,
            edge: facts.edge,
            thresholds: Vec::new(),
            passed: true,
        };
        report.thresholds = plan.thresholds.iter().map(|th| th.check(&report)).collect();
        report.passed = report.thresholds.iter().all(|v| v.passed);
        report
    }
}

impl PlanSummary {
    fn of(plan: &Plan) -> Self {
        let (mode, stages, connections, duration) = match &plan.load {
            Load::Open(s) => (
                "open",
                s.stages
                    .iter()
                    .map(|st| StageSummary {
                        from_rps: st.from_rps,
                        to_rps: st.to_rps,
                        duration_s: st.duration.as_secs_f64(),
                    })
                    .collect(),
                None,
                s.duration(),
            ),
            Load::Closed {
                connections,
                duration,
            } => ("closed", Vec::new(), Some(*connections as u64), *duration),
        };
        PlanSummary {
            url: plan.url.text.clone(),
            scenario: plan.scenario.clone(),
            mode: mode.to_string(),
            stages,
            connections,
            duration_s: duration.as_secs_f64(),
            targets: plan
                .targets
                .endpoints
                .iter()
                .zip(&plan.targets.weights)
                .map(|(e, w)| TargetSummary {
                    name: e.name.clone(),
                    method: e.method.to_string(),
                    path: e.path.as_str().to_string(),
                    weight: *w,
                })
                .collect(),
            ids: plan.ids.to_string(),
            seed: plan.seed,
            timeout_s: plan.timeout.as_secs_f64(),
            max_inflight: plan.max_inflight as u64,
            max_connections: plan.max_connections as u64,
        }
    }
}

/// Roughly log-spaced buckets, six per decade with round edges (10µs, 15µs, 20µs, 30µs, 50µs,
/// 70µs, 100µs, …), from the fastest to the slowest response: wide latency ranges stay readable,
/// as on HdrHistogram's plots.
fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut edges = vec![0];
    let mut decade = 1u64;
    'ladder: loop {
        for step in [10, 15, 20, 30, 50, 70] {
            let edge = decade * step;
            edges.push(edge);
            if edge >= h.max() && edges.len() >= 2 {
                break 'ladder;
            }
        }
        decade *= 10;
    }
    let first = edges.iter().rposition(|&e| e < h.min()).unwrap_or(0);
    let edges = &edges[first..];
    let mut out: Vec<Bucket> = edges
        .windows(2)
        .map(|w| Bucket {
            low_ms: ms(w[0]),
            high_ms: ms(w[1]),
            count: 0,
        })
        .collect();
    // Binning each recorded value once (rather than asking count_between per bucket) keeps a
    // value on an edge from being counted in two buckets.
    for v in h.iter_recorded() {
        let value = h.highest_equivalent(v.value_iterated_to());
        let i = edges[1..]
            .partition_point(|&e| e < value)
            .min(out.len() - 1);
        out[i].count += v.count_since_last_iteration();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_recorded_value() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for us in [120, 130, 900, 4_000, 4_100, 1_200_000] {
            h.record(us).unwrap();
        }
        let b = buckets(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 6);
        assert_eq!(b.first().unwrap().low_ms, 0.1);
        assert_eq!(b.first().unwrap().high_ms, 0.15);
        assert_eq!(b.last().unwrap().high_ms, 1500.0);
    }

    #[test]
    fn uncommon_percentiles_round_towards_the_slow_side() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for us in 1..=10_000 {
            h.record(us).unwrap();
        }
        let s = LatencyStats::from_histogram(&h);
        assert_eq!(s.percentile_ms(99.0), s.p99_ms);
        assert_eq!(s.percentile_ms(97.0), s.p99_ms);
        assert_eq!(s.percentile_ms(99.95), s.percentiles[9].1);
    }
}
