//! Prometheus metrics of an API process, served on the internal listener: requests by route
//! template (never the raw URL, so product ids cannot blow up the series count), method and
//! status; latency; and database pool occupancy read at scrape time.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(pool.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            pool,
            store: OnceLock::new(),
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
    let method = req.method().clone();
    let res = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), res.status().as_str()])
        .inc();
    metrics
        .duration
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(elapsed);
    res
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
