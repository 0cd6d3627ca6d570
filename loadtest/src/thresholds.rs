//! Pass/fail rules on a report (`p99<20ms`, `errors<0.1%`), which set the exit code so CI and
//! scripts can gate on a run, as k6 thresholds do.
//!
//! Grammar: `METRIC OP VALUE`, OP one of `<`, `<=`, `>`, `>=`.
//! - Latency: `min`, `avg`, `p50`, `p90`, `p95`, `p99`, `p99.9` (any `pN`), `max`; scheduled
//!   (coordinated-omission corrected) latency by default, `sent.p99` for latency from the send.
//!   Values take `us`, `ms` or `s`; a bare number is milliseconds.
//! - `errors`: failed / scheduled, and `ok`: ok / scheduled (the loader.io "throughput"), as a
//!   fraction (`0.001`) or percentage (`0.1%`).
//! - `rps`, `ok_rps`: achieved and successful requests per second.
//! - `dropped`, `late`, `status`, `timeout`, `connect`, `reset`, `other`: a count, or a share of
//!   scheduled requests when the value ends in `%`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::client::ErrorKind;
use crate::report::{LatencyStats, Report};
use crate::units::{deserialize_from_str, format_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
        }
    }
}

/// Which latency statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Min,
    Avg,
    Max,
    Percentile(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    Latency { sent: bool, stat: Stat },
    ErrorRate,
    OkRatio,
    Rps,
    OkRps,
    Late,
    Kind(ErrorKind),
}

/// One parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: Metric,
    pub op: Op,
    /// Milliseconds for latency, a fraction for rates and `%` values, else a plain number.
    pub value: f64,
    /// Written with `%`: for counts, compare the share of scheduled requests.
    pub percent: bool,
}

/// A threshold checked against a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub threshold: String,
    /// The measured value, formatted in the threshold's unit.
    pub actual: String,
    pub passed: bool,
}

impl Threshold {
    /// Checks the threshold. A latency threshold on a run with no responses fails: there is
    /// nothing to show it holds.
    pub fn check(&self, report: &Report) -> Verdict {
        let scheduled = report.summary.scheduled.max(1) as f64;
        let actual: Option<f64> = match self.metric {
            Metric::Latency { sent, stat } => {
                let l: &LatencyStats = if sent {
                    &report.latency.sent
                } else {
                    &report.latency.scheduled
                };
                (l.count > 0).then(|| match stat {
                    Stat::Min => l.min_ms,
                    Stat::Avg => l.avg_ms,
                    Stat::Max => l.max_ms,
                    Stat::Percentile(p) => l.percentile_ms(p),
                })
            }
            Metric::ErrorRate => Some(report.summary.error_rate),
            Metric::OkRatio => Some(report.summary.ok as f64 / scheduled),
            Metric::Rps => Some(report.summary.achieved_rps),
            Metric::OkRps => Some(report.summary.ok_rps),
            Metric::Late | Metric::Kind(_) => {
                let count = match self.metric {
                    Metric::Kind(kind) => report.errors.count(kind),
                    _ => report.summary.late,
                } as f64;
                Some(if self.percent {
                    count / scheduled
                } else {
                    count
                })
            }
        };
        let shown = match actual {
            None => "no responses".to_string(),
            Some(v) => match self.metric {
                Metric::Latency { .. } => format_ms(v),
                Metric::Rps | Metric::OkRps => format!("{v:.1}/s"),
                _ if self.percent || matches!(self.metric, Metric::ErrorRate | Metric::OkRatio) => {
                    format!("{:.3}%", v * 100.0)
                }
                _ => format!("{v}"),
            },
        };
        Verdict {
            threshold: self.to_string(),
            actual: shown,
            passed: actual.is_some_and(|v| self.op.holds(v, self.value)),
        }
    }
}

fn parse_stat(text: &str) -> Option<Stat> {
    Some(match text {
        "min" => Stat::Min,
        "avg" | "mean" => Stat::Avg,
        "max" => Stat::Max,
        "med" | "median" => Stat::Percentile(50.0),
        _ => {
            let p: f64 = text.strip_prefix('p')?.parse().ok()?;
            if !(0.0..=100.0).contains(&p) {
                return None;
            }
            Stat::Percentile(p)
        }
    })
}

fn parse_latency_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("us").or_else(|| text.strip_suffix("µs")) {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        (text, 1.0)
    };
    let v: f64 = number.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

impl FromStr for Threshold {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let err = |why: &str| format!("invalid threshold {text:?}: {why}");
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact
            .find(['<', '>'])
            .ok_or_else(|| err("no comparison (<, <=, >, >=)"))?;
        let (name, rest) = compact.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else {
            (Op::Gt, &rest[1..])
        };
        let (number, percent) = match value.strip_suffix('%') {
            Some(n) => (n, true),
            None => (value, false),
        };
        let plain = || -> Result<f64, String> {
            number
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| err("the value is not a non-negative number"))
        };
        let rate = || -> Result<f64, String> {
            let v = plain()?;
            Ok(if percent { v / 100.0 } else { v })
        };
        let no_percent = |metric| -> Result<Metric, String> {
            if percent {
                Err(err("this metric takes no '%'"))
            } else {
                Ok(metric)
            }
        };
        let (metric, value) = match name {
            "errors" => (Metric::ErrorRate, rate()?),
            "ok" => (Metric::OkRatio, rate()?),
            "rps" => (no_percent(Metric::Rps)?, plain()?),
            "ok_rps" => (no_percent(Metric::OkRps)?, plain()?),
            "late" => (Metric::Late, rate()?),
            _ => {
                if let Some(kind) = ErrorKind::ALL.into_iter().find(|k| k.name() == name) {
                    (Metric::Kind(kind), rate()?)
                } else {
                    let (sent, stat) = match name.strip_prefix("sent.") {
                        Some(s) => (true, s),
                        None => (false, name.strip_prefix("scheduled.").unwrap_or(name)),
                    };
                    let stat = parse_stat(stat).ok_or_else(|| {
                        err("unknown metric (try p99, avg, max, errors, ok, rps, dropped, timeout)")
                    })?;
                    if percent {
                        return Err(err("a latency takes a unit like 20ms, not '%'"));
                    }
                    let ms = parse_latency_ms(number).ok_or_else(|| {
                        err("the latency is not a non-negative duration like 20ms or 1.5s")
                    })?;
                    (Metric::Latency { sent, stat }, ms)
                }
            }
        };
        Ok(Threshold {
            metric,
            op,
            value,
            percent,
        })
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.metric {
            Metric::Latency { sent, stat } => {
                let stat = match stat {
                    Stat::Min => "min".to_string(),
                    Stat::Avg => "avg".to_string(),
                    Stat::Max => "max".to_string(),
                    Stat::Percentile(p) => format!("p{p}"),
                };
                if sent { format!("sent.{stat}") } else { stat }
            }
            Metric::ErrorRate => "errors".into(),
            Metric::OkRatio => "ok".into(),
            Metric::Rps => "rps".into(),
            Metric::OkRps => "ok_rps".into(),
            Metric::Late => "late".into(),
            Metric::Kind(kind) => kind.name().into(),
        };
        let value = match self.metric {
            Metric::Latency { .. } => format!("{}ms", self.value),
            _ if self.percent => format!("{}%", self.value * 100.0),
            _ => format!("{}", self.value),
        };
        write!(f, "{name}{}{value}", self.op.symbol())
    }
}
deserialize_from_str!(Threshold);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thresholds_read_like_k6() {
        let t: Threshold = "p99<20ms".parse().unwrap();
        assert_eq!(
            t.metric,
            Metric::Latency {
                sent: false,
                stat: Stat::Percentile(99.0)
            }
        );
        assert_eq!((t.op, t.value), (Op::Lt, 20.0));
        let t: Threshold = "errors < 0.1%".parse().unwrap();
        assert_eq!((t.metric, t.value), (Metric::ErrorRate, 0.001));
        let t: Threshold = "sent.p99.9<=1.5s".parse().unwrap();
        assert_eq!(
            t.metric,
            Metric::Latency {
                sent: true,
                stat: Stat::Percentile(99.9)
            }
        );
        assert_eq!(t.value, 1500.0);
        let t: Threshold = "dropped<1".parse().unwrap();
        assert_eq!((t.metric, t.value), (Metric::Kind(ErrorKind::Dropped), 1.0));
        assert_eq!("rps>=6900".parse::<Threshold>().unwrap().op, Op::Ge);
    }

    #[test]
    fn bad_thresholds_say_why() {
        for bad in [
            "p99",
            "p101<1ms",
            "p99<fast",
            "rps>5%",
            "p99<5%",
            "bogus<1",
            "x.p99<1ms",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    fn arb_threshold() -> impl Strategy<Value = Threshold> {
        let metric = prop_oneof![
            (any::<bool>(), 0u32..=1000).prop_map(|(sent, p)| Metric::Latency {
                sent,
                stat: Stat::Percentile(f64::from(p) / 10.0)
            }),
            any::<bool>().prop_map(|sent| Metric::Latency {
                sent,
                stat: Stat::Avg
            }),
            Just(Metric::ErrorRate),
            Just(Metric::OkRatio),
            Just(Metric::Rps),
            Just(Metric::Late),
            Just(Metric::Kind(ErrorKind::Timeout)),
        ];
        let op = prop_oneof![Just(Op::Lt), Just(Op::Le), Just(Op::Gt), Just(Op::Ge)];
        (metric, op, 0u32..100_000, any::<bool>()).prop_map(|(metric, op, v, pct)| {
            let percent =
                pct && !matches!(metric, Metric::Latency { .. } | Metric::Rps | Metric::OkRps);
            let value = if percent {
                f64::from(v) / 100.0 / 100.0
            } else {
                f64::from(v) / 100.0
            };
            Threshold {
                metric,
                op,
                value,
                percent,
            }
        })
    }

    proptest! {
        #[test]
        fn thresholds_print_as_they_parse(t in arb_threshold()) {
            let back: Threshold = t.to_string().parse().unwrap();
            prop_assert_eq!(back.metric, t.metric);
            prop_assert_eq!(back.op, t.op);
            prop_assert_eq!(back.percent, t.percent);
            prop_assert!((back.value - t.value).abs() <= 1e-9 * t.value.max(1.0));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,20}") {
            let _ = text.parse::<Threshold>();
        }
    }
}
