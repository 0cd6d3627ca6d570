use crate::helpers::{Origin, TestEdge, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_page_is_not_empty_and_has_the_series_the_load_tester_reads() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    edge.get("/t/metrics").await;
    edge.get("/t/metrics").await;
    let m = edge.metrics().await;
    let backend = format!(
        "edge_upstream_requests_total{{backend=\"{}\"}}",
        origin.addr
    );
    for series in [
        "edge_cache_requests_total{cache_status=\"hit\"}",
        "edge_cache_requests_total{cache_status=\"miss\"}",
        "edge_cache_requests_total{cache_status=\"stale\"}",
        "edge_cache_requests_total{cache_status=\"expired\"}",
        "edge_cache_requests_total{cache_status=\"bypass\"}",
        "edge_cache_coalesced_total",
        backend.as_str(),
        "edge_requests_total{",
        "edge_request_duration_seconds_bucket{",
        "le=\"0.0005\"",
        "edge_cache_bytes",
        "edge_cache_entries",
        "edge_cache_evictions_total",
        "edge_cache_invalidations_total",
        "edge_upstream_healthy{",
        "edge_open_connections",
        "edge_open_fds",
        "edge_retries_total",
    ] {
        assert!(m.contains(series), "missing {series} in:\n{m}");
    }
}
