//! Coordinated omission: when the server stalls for a second, requests queued behind the stall
//! are charged the wait in scheduled latency, while latency from the send stays small, the
//! number a closed-loop tester would have reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use reviews_loadtest::execute;

use crate::helpers::{plan, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_in_scheduled_latency_not_send_latency() {
    let seen = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/maybe-stall",
            get(|State(seen): State<Arc<AtomicU64>>| async move {
                // The 50th request (a quarter of a second in) holds its connection for a second.
                if seen.fetch_add(1, Ordering::SeqCst) == 50 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                "ok"
            }),
        )
        .with_state(seen);
    let url = serve(app).await;
    // One connection, like a closed-loop tool's single client: requests due during the stall
    // wait for it.
    let mut p = plan(&url, "GET /maybe-stall", 200.0, 2000);
    p.max_connections = 1;
    let report = execute(&p).await.unwrap();

    let s = &report.latency.scheduled;
    let sent = &report.latency.sent;
    assert_eq!(report.summary.ok, 400);
    // About 200 requests were due during the stall, waiting 0..1 s: well over 1% of 400.
    assert!(s.p99_ms > 500.0, "scheduled p99 {} ms", s.p99_ms);
    assert!(s.p90_ms > 100.0, "scheduled p90 {} ms", s.p90_ms);
    // Only one request was slow once sent.
    assert!(
        sent.p99_ms < s.p99_ms / 10.0,
        "send p99 {} ms vs scheduled {}",
        sent.p99_ms,
        s.p99_ms
    );
    assert!(sent.max_ms >= 1000.0);
    assert!(report.summary.late > 100, "{} late", report.summary.late);
    assert!(report.latency.lag.max_ms > 900.0);
}
