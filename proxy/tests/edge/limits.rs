use std::time::Duration;

use crate::helpers::{Origin, TestEdge, config};

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
