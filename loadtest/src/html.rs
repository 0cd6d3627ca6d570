//! Pictures of a run, the view loader.io gave: requests/s and latency percentiles over time and
//! a latency histogram, drawn as inline SVG in one self-contained HTML page (no scripts, no
//! CDN: the page must open on a machine without internet) or as one standalone SVG.

use std::fmt::Write as _;

use crate::report::{Report, SecondSummary};
use crate::units::format_ms;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 44.0;

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An axis or bucket label without trailing zeros: `150µs`, `1ms`, `1.5ms`, `100ms`, `1.5s`.
fn short_ms(ms: f64) -> String {
    let trim = |v: f64| {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if ms < 1.0 {
        format!("{}µs", trim(ms * 1000.0))
    } else if ms < 1000.0 {
        format!("{}ms", trim(ms))
    } else {
        format!("{}s", trim(ms / 1000.0))
    }
}

/// A round step (1, 2 or 5 × 10ⁿ) giving about `ticks` ticks up to `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

#[derive(Debug, Clone, Copy)]
enum Scale {
    Linear {
        max: f64,
    },
    /// Decades from 10^lo to 10^hi.
    Log {
        lo: f64,
        hi: f64,
    },
}

impl Scale {
    /// 0 at the bottom of the plot, 1 at the top.
    fn fraction(self, v: f64) -> f64 {
        match self {
            Scale::Linear { max } => (v / max).clamp(0.0, 1.0),
            Scale::Log { lo, hi } => ((v.max(1e-9).log10() - lo) / (hi - lo)).clamp(0.0, 1.0),
        }
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear { max } => {
                let step = nice_step(max, 5.0);
                (0..=((max / step).floor() as usize))
                    .map(|i| i as f64 * step)
                    .collect()
            }
            Scale::Log { lo, hi } => (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect(),
        }
    }
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    dashed: bool,
    /// `None` leaves a gap (a second with no responses).
    points: Vec<(f64, Option<f64>)>,
}

struct Plot {
    x_max: f64,
    y: Scale,
}

impl Plot {
    fn x(&self, v: f64) -> f64 {
        LEFT + (v / self.x_max.max(1e-9)) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - self.y.fraction(v) * (HEIGHT - TOP - BOTTOM)
    }
}

fn open_svg(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/><text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text><text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text>"##,
        esc(title),
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 6.0,
        esc(x_label),
        (TOP + HEIGHT - BOTTOM) / 2.0,
        esc(y_label),
    );
}

fn y_axis(out: &mut String, plot: &Plot, label: impl Fn(f64) -> String) {
    for t in plot.y.ticks() {
        let y = plot.y(t);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&label(t)),
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="#333"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
    );
}

fn x_axis_seconds(out: &mut String, plot: &Plot) {
    let step = nice_step(plot.x_max, 10.0).max(1.0);
    let mut t = 0.0;
    while t <= plot.x_max + 1e-9 {
        let x = plot.x(t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{t}s</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 4.0,
            HEIGHT - BOTTOM + 16.0,
        );
        t += step;
    }
}

/// Draws the series, the first listed on top (drawn last), and their legend in listed order.
fn lines(out: &mut String, plot: &Plot, series: &[Series]) {
    for s in series.iter().rev() {
        let dash = if s.dashed {
            r#" stroke-dasharray="5 4""#
        } else {
            ""
        };
        // One polyline per unbroken run of points.
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, out: &mut String| {
            if run.len() == 1 {
                run.push(run[0].clone());
            }
            if !run.is_empty() {
                let _ = write!(
                    out,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
                    s.color,
                    run.join(" ")
                );
            }
            run.clear();
        };
        for (x, y) in &s.points {
            match y {
                Some(y) => run.push(format!("{:.1},{:.1}", plot.x(*x), plot.y(*y))),
                None => flush(&mut run, out),
            }
        }
        flush(&mut run, out);
    }
    // Legend, right-aligned along the top.
    let mut x = WIDTH - RIGHT;
    for s in series.iter().rev() {
        x -= 12.0 + 7.0 * s.name.len() as f64 + 18.0;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="22" width="12" height="4" fill="{}"/><text x="{:.1}" y="28">{}</text>"#,
            s.color,
            x + 16.0,
            esc(s.name)
        );
    }
}

/// Requests per second over the run: scheduled, completed (achieved), ok and failed.
pub fn rate_chart(report: &Report) -> String {
    let t = &report.timeline;
    let mut out = String::new();
    open_svg(
        &mut out,
        "Requests per second",
        "seconds into the run",
        "requests/s",
    );
    let max = t
        .iter()
        .map(|s| s.scheduled.max(s.completed) as f64)
        .fold(1.0, f64::max);
    let plot = Plot {
        x_max: t.len().max(1) as f64,
        y: Scale::Linear { max: max * 1.1 },
    };
    y_axis(&mut out, &plot, |v| format!("{v}"));
    x_axis_seconds(&mut out, &plot);
    // Each second's count is drawn at the second's middle. Seconds after the schedule only
    // hold late responses, so only the achieved line goes on there (a drop to zero in the
    // other lines would look like a failure).
    let planned = report.plan.duration_s.ceil() as u64;
    let series = |f: fn(&SecondSummary) -> u64, all: bool| -> Vec<(f64, Option<f64>)> {
        t.iter()
            .map(|s| {
                let y = (all || s.second < planned).then(|| f(s) as f64);
                (s.second as f64 + 0.5, y)
            })
            .collect()
    };
    let mut all = vec![
        Series {
            name: "achieved (done/s)",
            color: "#1f77b4",
            dashed: false,
            points: series(|s| s.completed, true),
        },
        Series {
            name: "ok",
            color: "#2ca02c",
            dashed: false,
            points: series(|s| s.ok, false),
        },
        Series {
            name: "failed",
            color: "#d62728",
            dashed: false,
            points: series(|s| s.failed, false),
        },
    ];
    if report.plan.mode == "open" {
        all.insert(
            0,
            Series {
                name: "target",
                color: "#777",
                dashed: true,
                points: series(|s| s.scheduled, false),
            },
        );
    }
    lines(&mut out, &plot, &all);
    out.push_str("</svg>");
    out
}

/// Latency percentiles per scheduled second, on a log scale so a stall and the normal case
/// both stay visible.
pub fn latency_chart(report: &Report) -> String {
    let t = &report.timeline;
    let mut out = String::new();
    open_svg(
        &mut out,
        "Latency over time (from scheduled start)",
        "seconds into the run",
        "latency",
    );
    let values: Vec<f64> = t
        .iter()
        .flat_map(|s| [s.p50_ms, s.max_ms])
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if values.is_empty() {
        (-1.0, 1.0)
    } else {
        let lo = lo.log10().floor();
        (lo, hi.log10().ceil().max(lo + 1.0))
    };
    let plot = Plot {
        x_max: t.len().max(1) as f64,
        y: Scale::Log { lo, hi },
    };
    y_axis(&mut out, &plot, short_ms);
    x_axis_seconds(&mut out, &plot);
    let series = |f: fn(&SecondSummary) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        t.iter().map(|s| (s.second as f64 + 0.5, f(s))).collect()
    };
    lines(
        &mut out,
        &plot,
        &[
            Series {
                name: "p50",
                color: "#2ca02c",
                dashed: false,
                points: series(|s| s.p50_ms),
            },
            Series {
                name: "p90",
                color: "#1f77b4",
                dashed: false,
                points: series(|s| s.p90_ms),
            },
            Series {
                name: "p99",
                color: "#ff7f0e",
                dashed: false,
                points: series(|s| s.p99_ms),
            },
            Series {
                name: "max",
                color: "#d62728",
                dashed: true,
                points: series(|s| s.max_ms),
            },
        ],
    );
    out.push_str("</svg>");
    out
}

/// Responses by latency bucket (log-spaced), from the scheduled start.
pub fn histogram_chart(report: &Report) -> String {
    let buckets = &report.histogram;
    let mut out = String::new();
    open_svg(
        &mut out,
        "Latency histogram (from scheduled start)",
        "latency (bucket upper bound)",
        "responses",
    );
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let plot = Plot {
        x_max: buckets.len().max(1) as f64,
        y: Scale::Linear { max: max * 1.1 },
    };
    y_axis(&mut out, &plot, |v| format!("{v}"));
    let width = plot.x(1.0) - plot.x(0.0);
    let label_every = buckets.len().div_ceil(14).max(1);
    for (i, b) in buckets.iter().enumerate() {
        let x = plot.x(i as f64);
        let y = plot.y(b.count as f64);
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#1f77b4"><title>{}–{}: {}</title></rect>"##,
            x + 1.0,
            (width - 2.0).max(1.0),
            (HEIGHT - BOTTOM - y).max(0.0),
            format_ms(b.low_ms),
            format_ms(b.high_ms),
            b.count
        );
        if i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">≤{}</text>"#,
                x + width / 2.0,
                HEIGHT - BOTTOM + 16.0,
                esc(&short_ms(b.high_ms))
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// The three charts stacked in one SVG, for `--html report.svg`.
pub fn render_svg(report: &Report) -> String {
    let charts = [
        rate_chart(report),
        latency_chart(report),
        histogram_chart(report),
    ];
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" viewBox="0 0 {WIDTH} {}">"#,
        HEIGHT * 3.0,
        HEIGHT * 3.0
    );
    for (i, chart) in charts.iter().enumerate() {
        // Nested <svg> elements position each chart; x/y go on the nested element.
        let _ = write!(
            out,
            "{}",
            chart.replacen("<svg ", &format!(r#"<svg y="{}" "#, HEIGHT * i as f64), 1)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn row(out: &mut String, name: &str, value: &str) {
    let _ = write!(
        out,
        "<tr><th>{}</th><td>{}</td></tr>",
        esc(name),
        esc(value)
    );
}

/// A self-contained HTML page: key figures, thresholds, the charts, the latency table, the
/// edge view and the timeline.
pub fn render_html(report: &Report) -> String {
    let s = &report.summary;
    let p = &report.plan;
    let mut out = String::new();
    let title = format!("reviews load: {} {}", p.mode, p.url);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title><style>
body{{font-family:sans-serif;margin:24px;color:#222;max-width:960px}}
table{{border-collapse:collapse;margin:8px 0 16px}}th,td{{padding:3px 10px;text-align:right;border-bottom:1px solid #eee}}
th{{text-align:left;font-weight:600}}.pass{{color:#2ca02c}}.fail{{color:#d62728}}svg{{display:block;margin:12px 0}}
code{{background:#f4f4f4;padding:1px 4px}}</style></head><body><h1>{}</h1>"#,
        esc(&title),
        esc(&title)
    );
    let verdict = if report.thresholds.is_empty() {
        String::new()
    } else if report.passed {
        r#" — <span class="pass">all thresholds passed</span>"#.to_string()
    } else {
        r#" — <span class="fail">thresholds failed</span>"#.to_string()
    };
    let _ = write!(
        out,
        "<p>{}{}</p><table>",
        esc(&format!(
            "{} · ids {} (seed {}) · {}",
            report.tool,
            p.ids,
            p.seed,
            p.scenario.as_deref().unwrap_or("no scenario")
        )),
        verdict
    );
    for t in &p.targets {
        row(
            &mut out,
            &format!("target {} (weight {})", t.name, t.weight),
            &format!("{} {}", t.method, t.path),
        );
    }
    row(
        &mut out,
        "throughput (ok/total)",
        &format!(
            "{} ({:.3}%)",
            s.throughput,
            100.0 * s.ok as f64 / s.scheduled.max(1) as f64
        ),
    );
    row(
        &mut out,
        "requests/s",
        &format!(
            "{}achieved {:.1}, successful {:.1}",
            s.target_rps
                .map_or(String::new(), |t| format!("target {t:.1}, ")),
            s.achieved_rps,
            s.ok_rps
        ),
    );
    row(
        &mut out,
        "error rate",
        &format!(
            "{:.3}% — status {}, timeout {}, connect {}, reset {}, other {}, dropped {}",
            s.error_rate * 100.0,
            report.errors.status,
            report.errors.timeout,
            report.errors.connect,
            report.errors.reset,
            report.errors.other,
            report.errors.dropped
        ),
    );
    row(
        &mut out,
        "average response time",
        &format!(
            "{} from scheduled start, {} from send",
            format_ms(report.latency.scheduled.avg_ms),
            format_ms(report.latency.sent.avg_ms)
        ),
    );
    row(
        &mut out,
        "late sends",
        &format!("{} (> {} ms behind schedule)", s.late, s.late_after_ms),
    );
    if let Some(cores) = report.tester.cpu_cores_used {
        row(
            &mut out,
            "tester CPU",
            &format!("{cores:.2} of {} cores", report.tester.cores_available),
        );
    }
    out.push_str("</table>");
    if !report.thresholds.is_empty() {
        out.push_str("<h2>Thresholds</h2><table>");
        for v in &report.thresholds {
            let (class, mark) = if v.passed {
                ("pass", "✓")
            } else {
                ("fail", "✗")
            };
            let _ = write!(
                out,
                r#"<tr><th class="{class}">{mark} {}</th><td>{}</td></tr>"#,
                esc(&v.threshold),
                esc(&v.actual)
            );
        }
        out.push_str("</table>");
    }
    out.push_str(&rate_chart(report));
    out.push_str(&latency_chart(report));
    out.push_str(&histogram_chart(report));

    out.push_str("<h2>Latency</h2><table><tr><th></th>");
    for h in ["min", "avg", "p50", "p90", "p95", "p99", "p99.9", "max"] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>");
    for (name, l) in [
        ("from scheduled start", &report.latency.scheduled),
        ("from send", &report.latency.sent),
        ("lag behind schedule", &report.latency.lag),
    ] {
        let _ = write!(out, "<tr><th>{name}</th>");
        for v in [
            l.min_ms, l.avg_ms, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p99_9_ms, l.max_ms,
        ] {
            let _ = write!(out, "<td>{}</td>", format_ms(v));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");

    if let Some(edge) = &report.edge {
        out.push_str("<h2>Edge</h2><table>");
        row(&mut out, "cache", &edge.to_string());
        for b in &edge.backends {
            row(
                &mut out,
                &format!("upstream {}", b.backend),
                &format!("{} ({:.1}%)", b.requests, b.share * 100.0),
            );
        }
        out.push_str("</table>");
    }

    out.push_str("<details><summary>Timeline (per scheduled second)</summary><table><tr>");
    for h in [
        "second",
        "scheduled",
        "ok",
        "failed",
        "dropped",
        "done",
        "p50",
        "p90",
        "p99",
        "max",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>");
    let opt = |v: Option<f64>| v.map_or("-".to_string(), format_ms);
    for t in &report.timeline {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.second,
            t.scheduled,
            t.ok,
            t.failed,
            t.dropped,
            t.completed,
            opt(t.p50_ms),
            opt(t.p90_ms),
            opt(t.p99_ms),
            opt(t.max_ms)
        );
    }
    out.push_str("</table></details></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(7000.0, 5.0), 2000.0);
        assert_eq!(nice_step(60.0, 10.0), 10.0);
        assert_eq!(nice_step(3.0, 10.0), 0.5);
    }

    #[test]
    fn labels_read_as_round_units() {
        let labels: Vec<String> = [0.1, 0.15, 1.0, 1.5, 100.0, 1500.0]
            .into_iter()
            .map(short_ms)
            .collect();
        assert_eq!(labels, ["100µs", "150µs", "1ms", "1.5ms", "100ms", "1.5s"]);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
