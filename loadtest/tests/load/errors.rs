//! Every failure is counted under its own kind: an error status, a timeout, a refused
//! connection and a reset connection each come from a server made to fail that way.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use reviews_loadtest::execute;
use reviews_loadtest::report::Report;

use crate::helpers::{closed_port_url, plan, serve, serve_resets};

/// 10 requests (20/s for 500 ms) that all fail, and the one kind they failed with.
fn assert_all_failed_as(report: &Report, kind: &str, count: u64) {
    let e = &report.errors;
    let counts = [
        ("status", e.status),
        ("timeout", e.timeout),
        ("connect", e.connect),
        ("reset", e.reset),
        ("other", e.other),
        ("dropped", e.dropped),
    ];
    for (name, n) in counts {
        let expected = if name == kind { count } else { 0 };
        assert_eq!(
            n, expected,
            "{name} errors: {:?} (first: {:?})",
            counts, e.first
        );
    }
    assert_eq!(report.summary.ok, 0);
    assert_eq!(report.summary.failed, count);
    assert_eq!(report.summary.error_rate, 1.0);
    assert!(e.first.contains_key(kind), "{:?}", e.first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_status_errors_with_their_code() {
    let app = Router::new().route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    let url = serve(app).await;
    let report = execute(&plan(&url, "GET /fail", 20.0, 500)).await.unwrap();
    assert_all_failed_as(&report, "status", 10);
    assert_eq!(report.status_codes["500"], 10);
    // A fast 500 is still a response the user waited for: it is timed.
    assert_eq!(report.latency.scheduled.count, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sleeping_past_the_timeout_gives_timeouts() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "too late"
        }),
    );
    let url = serve(app).await;
    let mut p = plan(&url, "GET /slow", 20.0, 500);
    p.timeout = Duration::from_millis(200);
    let report = execute(&p).await.unwrap();
    assert_all_failed_as(&report, "timeout", 10);
    assert!(
        report.summary.elapsed_s < 2.0,
        "the run waited for the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_gives_connect_errors() {
    let url = closed_port_url();
    let report = execute(&plan(&url, "GET /", 20.0, 500)).await.unwrap();
    assert_all_failed_as(&report, "connect", 10);
    assert_eq!(report.latency.scheduled.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_resetting_connections_gives_reset_errors() {
    let url = serve_resets().await;
    let report = execute(&plan(&url, "GET /", 20.0, 500)).await.unwrap();
    assert_all_failed_as(&report, "reset", 10);
}
