//! Prometheus series of the edge, registered once in `prometheus` 0.14's global registry (the
//! one `pingora-prometheus` serves on the admin listener). All names start with `edge_`;
//! labels are route templates, status classes, cache statuses and backend addresses, never
//! product ids.

use std::sync::{LazyLock, OnceLock};

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, register_histogram,
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec,
};

/// From 0.5 ms: cache hits are sub-millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

macro_rules! lazy {
    ($name:ident: $ty:ty = $init:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $init.expect(concat!("register ", stringify!($name))));
    };
}

lazy!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "edge_requests_total",
    "Requests answered by the edge, by client protocol: http1 (plain HTTP/1.x), http1_tls \
     (HTTP/1.x over TLS), h2 (HTTP/2 over TLS).",
    &["route", "method", "status_class", "cache_status", "protocol"]
));
lazy!(REQUEST_DURATION: HistogramVec = register_histogram_vec!(
    "edge_request_duration_seconds",
    "Time from request header to the end of the response.",
    &["route", "cache_status"],
    LATENCY_BUCKETS.to_vec()
));
lazy!(CACHE_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "edge_cache_requests_total",
    "Requests by cache status: hit, miss, stale, expired, bypass.",
    &["cache_status"]
));
lazy!(CACHE_COALESCED: IntCounter = register_int_counter!(
    "edge_cache_coalesced_total",
    "Misses that waited for another request's fill instead of going upstream."
));
lazy!(CACHE_FILLS: IntCounterVec = register_int_counter_vec!(
    "edge_cache_fills_total",
    "Fills that ended: stored, or dropped because a purge landed while they were in flight.",
    &["result"]
));
lazy!(CACHE_BYTES: IntGauge = register_int_gauge!(
    "edge_cache_bytes",
    "Bytes held by the cache (keys, headers, bodies, per-entry overhead)."
));
lazy!(CACHE_MAX_BYTES: IntGauge = register_int_gauge!("edge_cache_max_bytes", "cache.max_size."));
lazy!(CACHE_ENTRIES: IntGauge = register_int_gauge!("edge_cache_entries", "Entries in the cache."));
lazy!(CACHE_EVICTIONS: IntCounter = register_int_counter!(
    "edge_cache_evictions_total",
    "Entries evicted to stay within cache.max_size."
));
lazy!(CACHE_INVALIDATIONS: IntCounter = register_int_counter!(
    "edge_cache_invalidations_total",
    "Entries removed by a purge (write-aware or admin)."
));
lazy!(CACHE_PURGES: IntCounterVec = register_int_counter_vec!(
    "edge_cache_purges_total",
    "Purge requests: write (a POST/PUT/DELETE answered with Surrogate-Key), tag, key, all.",
    &["kind"]
));
lazy!(UPSTREAM_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "edge_upstream_requests_total",
    "Requests sent to a backend (each try counts).",
    &["backend"]
));
lazy!(UPSTREAM_ERRORS: IntCounterVec = register_int_counter_vec!(
    "edge_upstream_errors_total",
    "Failed tries by backend and kind: connect, timeout, reset, status_5xx, other.",
    &["backend", "kind"]
));
lazy!(UPSTREAM_DURATION: HistogramVec = register_histogram_vec!(
    "edge_upstream_response_seconds",
    "Time from picking a backend to its response header.",
    &["backend"],
    LATENCY_BUCKETS.to_vec()
));
lazy!(UPSTREAM_HEALTHY: IntGaugeVec = register_int_gauge_vec!(
    "edge_upstream_healthy",
    "1 when the backend takes traffic (active check passing and not ejected).",
    &["backend"]
));
lazy!(UPSTREAM_EJECTIONS: IntCounterVec = register_int_counter_vec!(
    "edge_upstream_ejections_total",
    "Passive ejections after consecutive failures.",
    &["backend"]
));
lazy!(UPSTREAM_IN_FLIGHT: IntGaugeVec = register_int_gauge_vec!(
    "edge_upstream_in_flight",
    "Requests outstanding at a backend.",
    &["backend"]
));
lazy!(RETRIES: IntCounterVec = register_int_counter_vec!(
    "edge_retries_total",
    "Tries repeated on another backend, by reason.",
    &["reason"]
));
lazy!(OPEN_CONNECTIONS: IntGauge = register_int_gauge!(
    "edge_open_connections",
    "Open client connections, idle keep-alive ones included (each holds a max_connections slot)."
));
lazy!(REJECTED: IntCounterVec = register_int_counter_vec!(
    "edge_rejected_total",
    "Requests or connections refused by the edge itself: connections (max_connections), \
     header_too_large, bad_request (ambiguous or malformed framing), not_implemented \
     (a transfer coding other than chunked).",
    &["reason"]
));
lazy!(DOWNSTREAM_TIMEOUTS: IntCounterVec = register_int_counter_vec!(
    "edge_client_timeouts_total",
    "Client connections closed by a deadline: header (request header not complete within \
     listen.header_read_timeout: 408), keepalive (idle past listen.keepalive_timeout).",
    &["kind"]
));
lazy!(CLIENT_ABORTS: IntCounterVec = register_int_counter_vec!(
    "edge_client_aborts_total",
    "Requests a client gave up on: it closed, reset or stalled while sending its header, its \
     body, or while its response was written.",
    &["phase"]
));
lazy!(TLS_HANDSHAKE_FAILURES: IntCounterVec = register_int_counter_vec!(
    "edge_tls_handshake_failures_total",
    "TLS handshakes that did not complete: failed (no common version or cipher, not TLS, \
     the client refused the certificate) or timeout (not done within listen.header_read_timeout).",
    &["reason"]
));
lazy!(H2_REFUSED: IntCounter = register_int_counter!(
    "edge_h2_refused_streams_total",
    "HTTP/2 streams refused because h2.max_concurrent_streams of the connection's requests \
     were still being handled (streams the client had reset included)."
));
lazy!(H2_CLOSED_FOR_RESETS: IntCounter = register_int_counter!(
    "edge_h2_reset_floods_total",
    "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM after h2.max_resets refused or \
     rejected streams."
));
lazy!(UPSTREAM_QUEUE_LENGTH: IntGauge = register_int_gauge!(
    "edge_upstream_queue_length",
    "Requests waiting for a backend below its upstream.max_in_flight."
));
lazy!(UPSTREAM_QUEUE_REJECTED: IntCounterVec = register_int_counter_vec!(
    "edge_upstream_queue_rejected_total",
    "Requests that found no backend slot: full (upstream.queue_size reached) or timeout \
     (upstream.queue_timeout passed); they got a stale copy or 503.",
    &["reason"]
));
lazy!(LOG_SUPPRESSED: IntCounter = register_int_counter!(
    "edge_log_suppressed_total",
    "Repeated Pingora warnings and errors dropped by the rate limit of the log bridge."
));
lazy!(OPEN_FDS: IntGauge = register_int_gauge!("edge_open_fds", "Open file descriptors of the process."));
lazy!(NOFILE_LIMIT: IntGauge = register_int_gauge!("edge_nofile_limit", "RLIMIT_NOFILE soft limit in force."));

/// Seconds from a purge's publication to its application here: a purge crosses hosts.
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
lazy!(INVALIDATION_PUBLISHED: IntCounter = register_int_counter!(
    "edge_invalidation_published_total",
    "Purges this edge made and appended to the shared stream ([invalidation])."
));
lazy!(INVALIDATION_DROPPED: IntCounter = register_int_counter!(
    "edge_invalidation_publish_dropped_total",
    "Purges not published because the outbox was full while Redis was unreachable (a purge \
     of everything is published on reconnecting instead)."
));
lazy!(INVALIDATION_RECEIVED: IntCounter = register_int_counter!(
    "edge_invalidation_received_total",
    "Stream entries read, this edge's own included."
));
lazy!(INVALIDATION_APPLIED: IntCounterVec = register_int_counter_vec!(
    "edge_invalidation_applied_total",
    "Purges of other edges and API processes applied here, by kind: tags, key, all, and gap \
     (everything dropped because the stream no longer held what was missed).",
    &["kind"]
));
lazy!(INVALIDATION_LAG: Histogram = register_histogram!(
    "edge_invalidation_lag_seconds",
    "Time from a purge's publication (publisher's clock) to its application on this edge.",
    LAG_BUCKETS.to_vec()
));
lazy!(INVALIDATION_CONNECTED: IntGauge = register_int_gauge!(
    "edge_invalidation_connected",
    "1 while the edge reads the shared purge stream, 0 while it cannot (entries then live at \
     most invalidation.disconnected_ttl). Absent without [invalidation]."
));
lazy!(INVALIDATION_PUBLISHER_CONNECTED: IntGauge = register_int_gauge!(
    "edge_invalidation_publisher_connected",
    "1 while the edge's purge publisher is connected to Redis."
));

lazy!(INVALIDATION_CONFIRMATIONS: IntCounterVec = register_int_counter_vec!(
    "edge_invalidation_confirmations_total",
    "Purges of writes and admin purges whose answer waited for every live edge to apply      them, by outcome: applied, timeout (invalidation.confirm_timeout passed first),      unconnected (Redis away: not waited for).",
    &["result"]
));
lazy!(INVALIDATION_CONFIRM_SECONDS: Histogram = register_histogram!(
    "edge_invalidation_confirm_seconds",
    "How long a write's answer waited for the other edges to apply its purge.",
    LAG_BUCKETS.to_vec()
));

/// Registers the shared-purge series; only edges with an `[invalidation]` section show them,
/// so the alert on a lost connection never fires for an edge that shares nothing.
pub fn init_invalidation() {
    LazyLock::force(&INVALIDATION_PUBLISHED);
    LazyLock::force(&INVALIDATION_DROPPED);
    LazyLock::force(&INVALIDATION_RECEIVED);
    for k in ["tags", "key", "all", "gap"] {
        INVALIDATION_APPLIED.with_label_values(&[k]);
    }
    LazyLock::force(&INVALIDATION_LAG);
    LazyLock::force(&INVALIDATION_CONNECTED);
    LazyLock::force(&INVALIDATION_PUBLISHER_CONNECTED);
    for r in ["applied", "timeout", "unconnected"] {
        INVALIDATION_CONFIRMATIONS.with_label_values(&[r]);
    }
    LazyLock::force(&INVALIDATION_CONFIRM_SECONDS);
}

/// Touches every series so a fresh edge shows them all (at zero) on its first scrape.
pub fn init() {
    for s in ["hit", "miss", "stale", "expired", "bypass"] {
        CACHE_REQUESTS.with_label_values(&[s]);
    }
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&CACHE_COALESCED);
    LazyLock::force(&CACHE_FILLS);
    LazyLock::force(&CACHE_BYTES);
    LazyLock::force(&CACHE_MAX_BYTES);
    LazyLock::force(&CACHE_ENTRIES);
    LazyLock::force(&CACHE_EVICTIONS);
    LazyLock::force(&CACHE_INVALIDATIONS);
    LazyLock::force(&CACHE_PURGES);
    LazyLock::force(&UPSTREAM_REQUESTS);
    LazyLock::force(&UPSTREAM_ERRORS);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&UPSTREAM_HEALTHY);
    LazyLock::force(&UPSTREAM_EJECTIONS);
    LazyLock::force(&UPSTREAM_IN_FLIGHT);
    for r in [
        "connect",
        "timeout",
        "reset",
        "status_5xx",
        "reused_connection",
    ] {
        RETRIES.with_label_values(&[r]);
    }
    for r in [
        "connections",
        "header_too_large",
        "bad_request",
        "not_implemented",
    ] {
        REJECTED.with_label_values(&[r]);
    }
    for k in ["header", "keepalive"] {
        DOWNSTREAM_TIMEOUTS.with_label_values(&[k]);
    }
    for p in ["header", "body", "response"] {
        CLIENT_ABORTS.with_label_values(&[p]);
    }
    for r in ["full", "timeout"] {
        UPSTREAM_QUEUE_REJECTED.with_label_values(&[r]);
    }
    for r in ["failed", "timeout"] {
        TLS_HANDSHAKE_FAILURES.with_label_values(&[r]);
    }
    LazyLock::force(&H2_REFUSED);
    LazyLock::force(&H2_CLOSED_FOR_RESETS);
    LazyLock::force(&OPEN_CONNECTIONS);
    LazyLock::force(&UPSTREAM_QUEUE_LENGTH);
    LazyLock::force(&LOG_SUPPRESSED);
    LazyLock::force(&OPEN_FDS);
    LazyLock::force(&NOFILE_LIMIT);
}

/// Open descriptors, counted from /proc/self/fd (Linux).
pub fn open_fds() -> Option<i64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64)
}

/// Status class label values; [`status_class_index`] maps a status into this.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Protocol label values, indexed by [`crate::downstream::Protocol`].
pub const PROTOCOLS: [&str; 3] = ["http1", "http1_tls", "h2"];
/// Method label values; anything else counts as `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

fn method_index(method: &str) -> usize {
    METHODS[..7].iter().position(|m| *m == method).unwrap_or(7)
}

/// The three series every request updates, resolved once per label combination.
struct RequestCell {
    requests: IntCounter,
    duration: Histogram,
    cache: IntCounter,
}

/// The per-request series (`edge_requests_total`, `edge_request_duration_seconds`,
/// `edge_cache_requests_total`) looked up by index instead of by label values: a
/// `with_label_values` call hashes every label and takes the vector's lock, three times per
/// request, which showed in the cache-hit profile. A cell is filled on first use, so only
/// combinations that happened appear in `/metrics`.
pub struct RequestSeries {
    /// Route labels; index `routes.len()` is `other`.
    routes: Vec<String>,
    cache_statuses: &'static [&'static str],
    cells: Box<[OnceLock<RequestCell>]>,
}

impl RequestSeries {
    /// `routes`: one label per configured cache route; `cache_statuses`: the label of each
    /// cache status index.
    pub fn new(routes: Vec<String>, cache_statuses: &'static [&'static str]) -> Self {
        let n = (routes.len() + 1)
            * METHODS.len()
            * STATUS_CLASSES.len()
            * cache_statuses.len()
            * PROTOCOLS.len();
        RequestSeries {
            routes,
            cache_statuses,
            cells: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one finished request.
    pub fn observe(
        &self,
        route: Option<usize>,
        method: &str,
        status: u16,
        cache_status: usize,
        protocol: usize,
        seconds: f64,
    ) {
        let route = route
            .filter(|&r| r < self.routes.len())
            .unwrap_or(self.routes.len());
        let (m, c) = (method_index(method), status_class_index(status));
        let protocol = protocol.min(PROTOCOLS.len() - 1);
        let i = (((route * METHODS.len() + m) * STATUS_CLASSES.len() + c)
            * self.cache_statuses.len()
            + cache_status)
            * PROTOCOLS.len()
            + protocol;
        let cell = self.cells[i].get_or_init(|| {
            let route = self.routes.get(route).map_or("other", String::as_str);
            let cache = self.cache_statuses[cache_status];
            RequestCell {
                requests: REQUESTS.with_label_values(&[
                    route,
                    METHODS[m],
                    STATUS_CLASSES[c],
                    cache,
                    PROTOCOLS[protocol],
                ]),
                duration: REQUEST_DURATION.with_label_values(&[route, cache]),
                cache: CACHE_REQUESTS.with_label_values(&[cache]),
            }
        });
        cell.requests.inc();
        cell.duration.observe(seconds);
        cell.cache.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_status() {
        assert_eq!(STATUS_CLASSES[status_class_index(100)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class_index(204)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class_index(304)], "3xx");
        assert_eq!(STATUS_CLASSES[status_class_index(431)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class_index(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class_index(0)], "none");
        assert_eq!(STATUS_CLASSES[status_class_index(600)], "none");
    }

    #[test]
    fn indexed_series_count_under_their_labels() {
        let series = RequestSeries::new(vec!["/idx-test".into()], &["hit", "miss"]);
        let before = REQUESTS
            .with_label_values(&["/idx-test", "GET", "2xx", "miss", "h2"])
            .get();
        series.observe(Some(0), "GET", 200, 1, 2, 0.001);
        series.observe(Some(0), "GET", 200, 1, 2, 0.001);
        series.observe(Some(0), "GET", 200, 1, 0, 0.001);
        series.observe(None, "BREW", 418, 0, 1, 0.001);
        let after = REQUESTS
            .with_label_values(&["/idx-test", "GET", "2xx", "miss", "h2"])
            .get();
        assert_eq!(after - before, 2);
        assert!(
            REQUESTS
                .with_label_values(&["other", "other", "4xx", "hit", "http1_tls"])
                .get()
                >= 1
        );
    }
}
