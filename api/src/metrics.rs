//! Prometheus metrics of an API process, served on the internal listener: requests by route
//! template, method and status; latency; and database pool occupancy read at scrape time.
//!
//! Every label comes from a closed set, so no client can grow the number of series (each one
//! costs memory for the life of the process and a line on every scrape; 20,000 made-up methods
//! once blew up both):
//! - `route`: the matched route template (`/reviews/{review_id}/helpful`, never the raw URL),
//!   or `unmatched`;
//! - `method`: one of the standard methods, or `other` (methods are case-sensitive tokens a
//!   client may invent, `get` and `FOO` included);
//! - `status`: the code when it is one the API answers with, else its class (`5xx`).
//! - `pool`, `state`: fixed names.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::store::ReviewStore;

/// Latency buckets from 0.5 ms: an indexed read on a warm database answers in well under 1 ms.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    pool: IntGaugeVec,
    connections: IntGaugeVec,
    refused: IntCounterVec,
    store: OnceLock<Arc<dyn ReviewStore>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "reviews_api_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "reviews_api_request_duration_seconds",
                "Time from request to response head, by route template and method.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("static metric definition");
        let pool = IntGaugeVec::new(
            Opts::new(
                "reviews_api_db_pool_connections",
                "Database pool connections by pool and state (busy, idle, max).",
            ),
            &["pool", "state"],
        )
        .expect("static metric definition");
        let connections = IntGaugeVec::new(
            Opts::new(
                "reviews_api_connections_open",
                "Open HTTP connections by listener (public, metrics); capped by server.max_connections.",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        let refused = IntCounterVec::new(
            Opts::new(
                "reviews_api_connections_refused_total",
                "Connections answered 503 and closed because server.max_connections were open.",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(pool.clone()),
            Box::new(connections.clone()),
            Box::new(refused.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            pool,
            connections,
            refused,
            store: OnceLock::new(),
        }
    }

    /// Registers the purge publisher's series (`[invalidation]` only, so the alert on a lost
    /// connection never fires for a process that publishes nothing).
    pub fn publish_metrics(&self) -> reviews_shared::invalidation::PublishMetrics {
        let published = IntCounter::new(
            "reviews_api_invalidation_published_total",
            "Purges of this process's writes appended to the shared stream ([invalidation]).",
        )
        .expect("static metric definition");
        let dropped = IntCounter::new(
            "reviews_api_invalidation_publish_dropped_total",
            "Purges dropped because the outbox was full while Redis was unreachable (a purge of \
             everything is published on reconnecting instead).",
        )
        .expect("static metric definition");
        let connected = IntGauge::new(
            "reviews_api_invalidation_connected",
            "1 while the purge publisher is connected to Redis.",
        )
        .expect("static metric definition");
        let confirmations = IntCounterVec::new(
            Opts::new(
                "reviews_api_invalidation_confirmations_total",
                "Writes whose answer waited for every live edge to apply their purge, by \
                 outcome: applied, timeout (invalidation.confirm_timeout passed first), \
                 unconnected (Redis away: not waited for).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        for r in ["applied", "timeout", "unconnected"] {
            confirmations.with_label_values(&[r]);
        }
        let confirm_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "reviews_api_invalidation_confirm_seconds",
                "How long a write's answer waited for the edges to apply its purge.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )
        .expect("static metric definition");
        for c in [
            Box::new(published.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dropped.clone()),
            Box::new(connected.clone()),
            Box::new(confirmations.clone()),
            Box::new(confirm_seconds.clone()),
        ] {
            // Registered once per process: a second call keeps the first series.
            let _ = self.registry.register(c);
        }
        reviews_shared::invalidation::PublishMetrics {
            published,
            dropped,
            connected,
            confirmations,
            confirm_seconds,
        }
    }

    /// The connection counters of one listener (`public` or `metrics`).
    pub(crate) fn connection_metrics(&self, listener: &'static str) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.connections.with_label_values(&[listener]),
            refused: self.refused.with_label_values(&[listener]),
        }
    }

    /// The store whose pools the page reports.
    pub fn watch_store(&self, store: Arc<dyn ReviewStore>) {
        let _ = self.store.set(store);
    }

    /// The Prometheus text page.
    pub fn render(&self) -> String {
        if let Some(store) = self.store.get() {
            for p in store.pool_stats() {
                self.pool
                    .with_label_values(&[p.pool, "busy"])
                    .set(p.size.saturating_sub(p.idle) as i64);
                self.pool
                    .with_label_values(&[p.pool, "idle"])
                    .set(p.idle as i64);
                self.pool
                    .with_label_values(&[p.pool, "max"])
                    .set(p.max as i64);
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What a listener's accept loop counts.
#[derive(Clone)]
pub(crate) struct ConnectionMetrics {
    pub(crate) open: IntGauge,
    pub(crate) refused: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware counting and timing every request under its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let res = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    metrics
        .requests
        .with_label_values(&[route.as_str(), method, status_label(res.status())])
        .inc();
    metrics
        .duration
        .with_label_values(&[route.as_str(), method])
        .observe(elapsed);
    res
}

/// The method as a label: the standard ones by name, anything else `other`.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

/// The codes the API answers with itself, labelled by number.
const ANSWERED: [(u16, &str); 12] = [
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (400, "400"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (500, "500"),
    (503, "503"),
];

/// The status as a label: the codes the API answers with by number, any other by class.
fn status_label(status: http::StatusCode) -> &'static str {
    let code = status.as_u16();
    if let Some((_, label)) = ANSWERED.iter().find(|(c, _)| *c == code) {
        return label;
    }
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// The internal listener's router: `/metrics` only.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_and_lower_case_methods_are_other() {
        for m in ["get", "FOO", "PROPFIND", "X-\u{7f}"] {
            if let Ok(m) = http::Method::from_bytes(m.as_bytes()) {
                assert_eq!(method_label(&m), "other", "{m}");
            }
        }
        assert_eq!(method_label(&http::Method::PUT), "PUT");
    }

    #[test]
    fn statuses_are_a_closed_set() {
        let labels: std::collections::HashSet<&str> = (100..=999)
            .filter_map(|c| http::StatusCode::from_u16(c).ok())
            .map(status_label)
            .collect();
        assert!(labels.len() <= 18, "{labels:?}");
        assert_eq!(status_label(http::StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(status_label(http::StatusCode::BAD_GATEWAY), "5xx");
        assert_eq!(
            status_label(http::StatusCode::from_u16(999).unwrap()),
            "other"
        );
    }
}
