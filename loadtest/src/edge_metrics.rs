//! The edge's view of a run: read its Prometheus metrics before and after, and report what the
//! cache did in between (hit ratio, stale and coalesced counts, the split across backends).
//!
//! The parser reads the Prometheus text exposition format generically; the series the report
//! looks for are the constants below, in one place, so they follow the edge if it renames them.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::client::BaseUrl;

/// Requests the edge answered, labelled by what its cache did.
pub const CACHE_REQUESTS: &str = "edge_cache_requests_total";
/// The label of [`CACHE_REQUESTS`] holding the cache outcome.
pub const CACHE_STATUS_LABEL: &str = "cache_status";
/// The cache outcomes the report lists, in order; `hit` is the hit-ratio numerator.
pub const CACHE_STATUSES: [&str; 5] = ["hit", "miss", "stale", "expired", "bypass"];
/// Requests that waited on another request's origin fetch instead of making their own.
pub const COALESCED: &str = "edge_cache_coalesced_total";
/// Requests the edge sent upstream, labelled by backend.
pub const UPSTREAM_REQUESTS: &str = "edge_upstream_requests_total";
/// The label of [`UPSTREAM_REQUESTS`] naming the backend.
pub const BACKEND_LABEL: &str = "backend";

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A line the parser could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses the Prometheus text format (version 0.0.4). Comments (`# HELP`, `# TYPE`) and blank
/// lines are skipped; timestamps after the value are accepted and ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: &str| ParseError {
            line: i + 1,
            message: format!("{message} in {line:?}"),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("invalid metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let (parsed, remainder) = parse_labels(after).map_err(err)?;
            labels = parsed;
            rest = remainder;
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| err("no value"))?;
        let value = parse_value(value).ok_or_else(|| err("invalid value"))?;
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

type Labels = Vec<(String, String)>;

/// Parses `a="x",b="y\"z"}` and returns the labels and the text after the `}`.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = text.find('=').ok_or("a label without '='")?;
        let name = text[..eq].trim();
        if name.is_empty() {
            return Err("an empty label name");
        }
        text = text[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        text = text[end + 1..].trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// Writes samples back in the text format (used by tests and handy for debugging).
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    format!("{k}=\"{v}\"")
                })
                .collect();
            out.push('{');
            out.push_str(&labels.join(","));
            out.push('}');
        }
        out.push_str(&format!(" {}\n", s.value));
    }
    out
}

/// The edge counters the report needs, summed over any other labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub cache: BTreeMap<String, f64>,
    pub coalesced: Option<f64>,
    pub backends: BTreeMap<String, f64>,
    pub saw_cache: bool,
    pub saw_upstream: bool,
}

impl Snapshot {
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut snap = Snapshot::default();
        for s in samples {
            if s.name == CACHE_REQUESTS {
                snap.saw_cache = true;
                if let Some(status) = s.label(CACHE_STATUS_LABEL) {
                    *snap.cache.entry(status.to_string()).or_insert(0.0) += s.value;
                }
            } else if s.name == COALESCED {
                *snap.coalesced.get_or_insert(0.0) += s.value;
            } else if s.name == UPSTREAM_REQUESTS {
                snap.saw_upstream = true;
                if let Some(backend) = s.label(BACKEND_LABEL) {
                    *snap.backends.entry(backend.to_string()).or_insert(0.0) += s.value;
                }
            }
        }
        snap
    }
}

/// What the edge did during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    pub url: String,
    /// Requests by cache status during the run (every status seen, the five known ones always).
    pub cache: BTreeMap<String, u64>,
    /// hit / all cache requests; null when the edge counted none.
    pub hit_ratio: Option<f64>,
    pub stale: u64,
    pub expired: u64,
    pub coalesced: Option<u64>,
    pub backends: Vec<BackendShare>,
    /// Series the report looked for but the edge does not serve.
    pub missing: Vec<String>,
    /// Set when the reading after the run failed.
    pub error: Option<String>,
}

/// One backend's part of the upstream requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendShare {
    pub backend: String,
    pub requests: u64,
    pub share: f64,
}

/// A counter's increase; a counter that went down was reset (edge restart), so its whole
/// current value is the increase, as Prometheus's `increase()` assumes.
fn increase(before: f64, after: f64) -> u64 {
    let d = if after >= before {
        after - before
    } else {
        after
    };
    if d.is_finite() { d.round() as u64 } else { 0 }
}

impl EdgeReport {
    pub fn between(url: &str, before: &Snapshot, after: &Snapshot) -> Self {
        let delta = |b: &BTreeMap<String, f64>, a: &BTreeMap<String, f64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), increase(b.get(k).copied().unwrap_or(0.0), *v)))
                .collect::<BTreeMap<String, u64>>()
        };
        let mut cache = delta(&before.cache, &after.cache);
        for status in CACHE_STATUSES {
            cache.entry(status.to_string()).or_insert(0);
        }
        let lookups: u64 = cache.values().sum();
        let hits = cache.get("hit").copied().unwrap_or(0);
        let backend_counts = delta(&before.backends, &after.backends);
        let upstream: u64 = backend_counts.values().sum();
        let backends = backend_counts
            .into_iter()
            .map(|(backend, requests)| BackendShare {
                backend,
                requests,
                share: if upstream > 0 {
                    requests as f64 / upstream as f64
                } else {
                    0.0
                },
            })
            .collect();
        let mut missing = Vec::new();
        if !after.saw_cache {
            missing.push(CACHE_REQUESTS.to_string());
        }
        if after.coalesced.is_none() {
            missing.push(COALESCED.to_string());
        }
        if !after.saw_upstream {
            missing.push(UPSTREAM_REQUESTS.to_string());
        }
        EdgeReport {
            url: url.to_string(),
            hit_ratio: (lookups > 0).then(|| hits as f64 / lookups as f64),
            stale: cache.get("stale").copied().unwrap_or(0),
            expired: cache.get("expired").copied().unwrap_or(0),
            cache,
            coalesced: after
                .coalesced
                .map(|a| increase(before.coalesced.unwrap_or(0.0), a)),
            backends,
            missing,
            error: None,
        }
    }

    /// A report that only says the reading after the run failed.
    pub fn failed(url: &str, error: String) -> Self {
        EdgeReport {
            url: url.to_string(),
            cache: BTreeMap::new(),
            hit_ratio: None,
            stale: 0,
            expired: 0,
            coalesced: None,
            backends: Vec::new(),
            missing: Vec::new(),
            error: Some(error),
        }
    }
}

/// Why the metrics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid metrics URL: {0}")]
    Url(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("requesting {0}: {1}")]
    Http(String, hyper::Error),
    #[error("{0} answered {1}")]
    Status(String, http::StatusCode),
    #[error("{0}: {1}")]
    Parse(String, ParseError),
}

/// Fetches and parses the metrics page; one plain connection, off the hot path.
pub async fn fetch(url: &str) -> Result<Snapshot, FetchError> {
    let base: BaseUrl = url.parse().map_err(FetchError::Url)?;
    let stream = TcpStream::connect((base.host.as_str(), base.port))
        .await
        .map_err(|e| FetchError::Connect(url.to_string(), e))?;
    let http = |e| FetchError::Http(url.to_string(), e);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = if base.prefix.is_empty() {
        "/".to_string()
    } else {
        base.prefix.clone()
    };
    let request = Request::get(path)
        .header(http::header::HOST, base.authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Url(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(url.to_string(), response.status()));
    }
    let body = response.into_body().collect().await.map_err(http)?;
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    let samples = parse(&text).map_err(|e| FetchError::Parse(url.to_string(), e))?;
    Ok(Snapshot::from_samples(&samples))
}

impl fmt::Display for EdgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.error {
            return write!(f, "metrics unavailable after the run: {e}");
        }
        match self.hit_ratio {
            Some(r) => write!(f, "hit ratio {:.1}%", r * 100.0)?,
            None => write!(f, "hit ratio -")?,
        }
        let statuses: Vec<String> = self.cache.iter().map(|(k, v)| format!("{k} {v}")).collect();
        write!(f, " ({})", statuses.join(", "))?;
        if let Some(c) = self.coalesced {
            write!(f, ", coalesced {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: &str = r#"
# HELP edge_cache_requests_total Requests by cache status.
# TYPE edge_cache_requests_total counter
edge_cache_requests_total{cache_status="hit",route="/reviews"} 90
edge_cache_requests_total{cache_status="hit",route="/reviews/meta"} 10
edge_cache_requests_total{cache_status="miss",route="/reviews"} 5 1700000000000
edge_cache_coalesced_total 3
edge_upstream_requests_total{backend="api-1:8081"} 4
edge_upstream_requests_total{backend="api-2:8081"} 1
edge_request_duration_seconds_bucket{le="+Inf"} 105
"#;

    #[test]
    fn the_text_format_parses_with_labels_and_timestamps() {
        let samples = parse(PAGE).unwrap();
        assert_eq!(samples.len(), 7);
        assert_eq!(samples[2].value, 5.0);
        assert_eq!(samples[0].label("route"), Some("/reviews"));
        assert_eq!(samples[6].label("le"), Some("+Inf"));
    }

    #[test]
    fn label_values_unescape() {
        let s = parse(r#"x{a="q\"uote",b="back\\slash",c="new\nline"} 1"#).unwrap();
        assert_eq!(s[0].label("a"), Some("q\"uote"));
        assert_eq!(s[0].label("b"), Some("back\\slash"));
        assert_eq!(s[0].label("c"), Some("new\nline"));
    }

    #[test]
    fn bad_lines_name_their_line_number() {
        let err = parse("ok 1\nbroken{a=1} 2\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn the_report_is_the_difference_between_readings() {
        let before = Snapshot::from_samples(&parse(PAGE).unwrap());
        let after_page = PAGE
            .replace("} 90", "} 180")
            .replace("} 5 1700000000000", "} 25")
            .replace("total 3", "total 8")
            .replace("8081\"} 4", "8081\"} 19");
        let after = Snapshot::from_samples(&parse(&after_page).unwrap());
        let r = EdgeReport::between("http://edge/metrics", &before, &after);
        assert_eq!(r.cache["hit"], 90);
        assert_eq!(r.cache["miss"], 20);
        assert_eq!(r.cache["stale"], 0);
        assert!((r.hit_ratio.unwrap() - 90.0 / 110.0).abs() < 1e-9);
        assert_eq!(r.coalesced, Some(5));
        assert_eq!(r.backends[0].requests, 15);
        assert_eq!(r.backends[1].requests, 0);
        assert!(r.missing.is_empty());
    }

    #[test]
    fn absent_series_are_listed_as_missing() {
        let empty = Snapshot::from_samples(&parse("up 1").unwrap());
        let r = EdgeReport::between("u", &empty, &empty);
        assert_eq!(r.missing.len(), 3);
        assert_eq!(r.hit_ratio, None);
    }

    proptest! {
        #[test]
        fn rendered_samples_parse_back(
            samples in proptest::collection::vec(
                ("[a-z_][a-z0-9_:]{0,20}",
                 proptest::collection::vec(("[a-z_][a-z0-9_]{0,8}", "\\PC{0,12}"), 0..4),
                 -1e12f64..1e12),
                0..8)
        ) {
            let samples: Vec<Sample> = samples
                .into_iter()
                .map(|(name, labels, value)| Sample { name, labels, value })
                .collect();
            prop_assert_eq!(parse(&render(&samples)).unwrap(), samples);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,80}") {
            let _ = parse(&text);
        }
    }
}
