//! The text report printed at the end of a run, laid out like k6's summary: the figures first,
//! then thresholds, then the per-second timeline.

use std::fmt::Write as _;

use crate::client::ErrorKind;
use crate::report::{LatencyStats, Report, SecondSummary};
use crate::units::format_ms;

/// Above this many seconds the timeline is printed in groups of seconds, to stay readable.
const MAX_TIMELINE_ROWS: usize = 120;

fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

fn latency_row(out: &mut String, name: &str, l: &LatencyStats) {
    if l.count == 0 {
        let _ = writeln!(out, "    {name:<10} (no responses)");
        return;
    }
    let cells = [
        l.min_ms, l.avg_ms, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p99_9_ms, l.max_ms,
    ];
    let _ = write!(out, "    {name:<10}");
    for c in cells {
        let _ = write!(out, "{:>9}", format_ms(c));
    }
    out.push('\n');
}

/// Renders the report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let p = &report.plan;
    let load = if p.mode == "open" {
        let stages: Vec<String> = p
            .stages
            .iter()
            .map(|st| {
                if st.from_rps == st.to_rps {
                    format!("{} req/s for {}s", st.from_rps, st.duration_s)
                } else {
                    format!(
                        "{}→{} req/s over {}s",
                        st.from_rps, st.to_rps, st.duration_s
                    )
                }
            })
            .collect();
        format!("open model, {}", stages.join(", then "))
    } else {
        format!(
            "closed model, {} connections for {}s",
            p.connections.unwrap_or(0),
            p.duration_s
        )
    };
    let _ = writeln!(out, "\nreviews load: {load} against {}", p.url);
    if let Some(name) = &p.scenario {
        let _ = writeln!(out, "  scenario ........ {name}");
    }
    for t in &p.targets {
        let _ = writeln!(
            out,
            "  target .......... {}={}  {} {}",
            t.name, t.weight, t.method, t.path
        );
    }
    let _ = writeln!(out, "  ids ............. {} (seed {})", p.ids, p.seed);
    out.push('\n');

    let _ = writeln!(
        out,
        "  requests ........ {} scheduled, {} sent, {} dropped, {} late (sent >{}ms behind schedule)",
        s.scheduled, s.sent, report.errors.dropped, s.late, s.late_after_ms
    );
    let ok_pct = if s.scheduled > 0 {
        s.ok as f64 * 100.0 / s.scheduled as f64
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "  throughput ...... {} ok ({ok_pct:.3}%)",
        s.throughput
    );
    let target = s
        .target_rps
        .map_or(String::new(), |t| format!("target {t:.1}/s, "));
    let _ = writeln!(
        out,
        "  rate ............ {target}achieved {:.1}/s, successful {:.1}/s over {:.2}s",
        s.achieved_rps, s.ok_rps, s.elapsed_s
    );
    let kinds: Vec<String> = ErrorKind::ALL
        .iter()
        .map(|k| format!("{} {}", k.name(), report.errors.count(*k)))
        .collect();
    let _ = writeln!(
        out,
        "  errors .......... {:.3}% ({}): {}",
        s.error_rate * 100.0,
        s.failed,
        kinds.join(", ")
    );
    for (kind, first) in &report.errors.first {
        let _ = writeln!(out, "                    first {kind}: {first}");
    }
    if !report.status_codes.is_empty() {
        let codes: Vec<String> = report
            .status_codes
            .iter()
            .map(|(c, n)| format!("{c}×{n}"))
            .collect();
        let _ = writeln!(out, "  status codes .... {}", codes.join(", "));
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "  latency         min      avg      p50      p90      p95      p99    p99.9      max"
    );
    latency_row(&mut out, "scheduled", &report.latency.scheduled);
    latency_row(&mut out, "sent", &report.latency.sent);
    latency_row(&mut out, "lag", &report.latency.lag);
    let _ = writeln!(
        out,
        "    (scheduled: from the planned start, coordinated omission corrected; sent: from the \
         actual send; lag: how far behind the tester sent)"
    );
    if report.endpoints.len() > 1 {
        for e in &report.endpoints {
            let _ = writeln!(
                out,
                "  endpoint {:<8} {} requests, {} failed, p50 {}, p99 {}",
                e.name,
                e.requests,
                e.failed,
                format_ms(e.p50_ms),
                format_ms(e.p99_ms)
            );
        }
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "  transfer ........ {} received over {} connections",
        bytes(s.bytes_received),
        s.connections_opened
    );
    let t = &report.tester;
    match (t.cpu_cores_used, t.cpu_user_s, t.cpu_system_s) {
        (Some(cores), Some(user), Some(system)) => {
            let _ = writeln!(
                out,
                "  tester CPU ...... {cores:.2} of {} cores (user {user:.1}s, system {system:.1}s), peak {} in flight",
                t.cores_available, t.peak_inflight
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  tester CPU ...... unknown on this OS, peak {} in flight",
                t.peak_inflight
            );
        }
    }
    if let Some(edge) = &report.edge {
        let _ = writeln!(out, "  edge ............ {edge}");
        if !edge.backends.is_empty() {
            let split: Vec<String> = edge
                .backends
                .iter()
                .map(|b| format!("{} {} ({:.1}%)", b.backend, b.requests, b.share * 100.0))
                .collect();
            let _ = writeln!(out, "                    upstream {}", split.join(", "));
        }
        if !edge.missing.is_empty() {
            let _ = writeln!(
                out,
                "                    not served by the edge: {}",
                edge.missing.join(", ")
            );
        }
    }
    if !report.thresholds.is_empty() {
        let _ = writeln!(out, "\n  thresholds");
        for v in &report.thresholds {
            let mark = if v.passed { "✓" } else { "✗" };
            let _ = writeln!(out, "    {mark} {:<24} actual {}", v.threshold, v.actual);
        }
    }
    timeline(&mut out, &report.timeline);
    out
}

fn timeline(out: &mut String, seconds: &[SecondSummary]) {
    if seconds.is_empty() {
        return;
    }
    let group = seconds.len().div_ceil(MAX_TIMELINE_ROWS);
    let _ = writeln!(
        out,
        "\n  timeline (by scheduled second; done = responses finished in that second)\n  {:>7} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "second", "sched", "ok", "failed", "dropped", "done", "p50", "p90", "p99", "max"
    );
    for chunk in seconds.chunks(group) {
        let sum = |f: fn(&SecondSummary) -> u64| chunk.iter().map(f).sum::<u64>();
        // Over a group, show the worst second's percentiles: averaging would hide a stall.
        let worst = |f: fn(&SecondSummary) -> Option<f64>| {
            chunk
                .iter()
                .filter_map(f)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                .map_or("-".to_string(), format_ms)
        };
        let label = if group == 1 {
            format!("{}", chunk[0].second)
        } else {
            format!("{}-{}", chunk[0].second, chunk[chunk.len() - 1].second)
        };
        let _ = writeln!(
            out,
            "  {label:>7} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            sum(|s| s.scheduled),
            sum(|s| s.ok),
            sum(|s| s.failed),
            sum(|s| s.dropped),
            sum(|s| s.completed),
            worst(|s| s.p50_ms),
            worst(|s| s.p90_ms),
            worst(|s| s.p99_ms),
            worst(|s| s.max_ms),
        );
    }
}
