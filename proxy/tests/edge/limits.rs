use std::time::Duration;

use crate::helpers::{Origin, TestEdge, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_max_connections_a_request_gets_503_instead_of_waiting() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.max_connections = 2;
    c.max_connections_wait = Duration::from_millis(50).into();
    c.nofile = c.nofile_needed();
    let edge = TestEdge::start(c);
    let slow = |i: u32| {
        edge.get(Box::leak(
            format!("/nocache/slow-{i}?delay_ms=1500").into_boxed_str(),
        ))
    };
    let (a, b, over) = tokio::join!(slow(1), slow(2), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = edge.get("/nocache/over").await;
        (
            r,
            origin.state.total.load(std::sync::atomic::Ordering::SeqCst),
        )
    });
    assert_eq!((a.status, b.status), (200, 200));
    let (over, origin_requests_then) = over;
    assert_eq!(over.status, 503);
    assert!(!over.header("retry-after").is_empty());
    assert_eq!(
        origin_requests_then, 2,
        "the overflow answer came before the slow requests finished"
    );
    assert_eq!(
        edge.get("/nocache/after").await.status,
        200,
        "slots are given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_request_headers_get_431() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let big = "x".repeat(20 << 10);
    let r = edge.get_with("/nocache/big", &[("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(
        origin.state.total.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_shutdown_lets_an_in_flight_request_finish() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.shutdown.grace_period = Duration::from_secs(1).into();
    c.shutdown.graceful_timeout = Duration::from_secs(2).into();
    let mut edge = TestEdge::start(c);
    let url = edge.url("/nocache/drain?delay_ms=700");
    let client = edge.client.clone();
    let in_flight =
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = edge.edge.take().unwrap();
    tokio::task::spawn_blocking(move || running.shutdown_gracefully())
        .await
        .unwrap();
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the request in flight at SIGTERM completes"
    );
}
