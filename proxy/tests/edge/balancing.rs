use std::time::{Duration, Instant};

use crate::helpers::{Origin, TestEdge, config};

async fn backends(edge: &TestEdge) -> serde_json::Value {
    let text = edge
        .client
        .get(edge.admin_url("/backends"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn wait_until<F: AsyncFn() -> bool>(what: &str, limit: Duration, check: F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_backend_fails_no_get_is_ejected_and_comes_back() {
    let mut a = Origin::start("a");
    let b = Origin::start("b");
    let edge = TestEdge::start(config(&[&a, &b], ""));
    for i in 0..20 {
        assert_eq!(edge.get(&format!("/nocache/warm-{i}")).await.status, 200);
    }
    assert!(
        a.state.total.load(std::sync::atomic::Ordering::SeqCst) >= 5,
        "both backends take traffic"
    );

    a.kill();
    for i in 0..40 {
        let r = edge.get(&format!("/nocache/after-kill-{i}")).await;
        assert_eq!(
            r.status,
            200,
            "GET {i} failed after a backend died: {}",
            r.text()
        );
    }
    let status = backends(&edge).await;
    let dead = &status[0];
    assert!(
        dead["ejected"] == true || dead["healthy"] == false,
        "the dead backend is still in rotation: {status}"
    );

    a.revive();
    let before = a.state.total.load(std::sync::atomic::Ordering::SeqCst);
    wait_until(
        "the revived backend is readmitted",
        Duration::from_secs(10),
        async || {
            let s = backends(&edge).await;
            s[0]["healthy"] == true && s[0]["ejected"] == false
        },
    )
    .await;
    for i in 0..20 {
        assert_eq!(edge.get(&format!("/nocache/revived-{i}")).await.status, 200);
    }
    assert!(
        a.state.total.load(std::sync::atomic::Ordering::SeqCst) > before,
        "traffic reaches it again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_from_one_backend_is_retried_on_another_for_get_but_not_post() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    *a.state.force_status.lock() = Some(503);
    let mut c = config(&[&a, &b], "");
    c.upstream.ejection.consecutive_failures = 0;
    c.upstream.health.enabled = false;
    let edge = TestEdge::start(c);
    for i in 0..10 {
        let r = edge.get(&format!("/nocache/retry-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut posted_503 = 0;
    for i in 0..10 {
        let r = edge
            .client
            .post(edge.url(&format!("/nocache/post-{i}")))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            posted_503 += 1;
        }
    }
    assert!(
        posted_503 > 0,
        "a POST that reached a backend must not be retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_backend_down_a_stale_copy_is_served_else_503_with_retry_after() {
    let mut a = Origin::start("a");
    let edge = TestEdge::start(config(&[&a], ""));
    let path = "/t/down?cc=public,max-age=1,stale-while-revalidate=0";
    let first = edge.get(path).await;
    assert_eq!(first.cache(), "miss");
    a.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stale = edge.get(path).await;
    assert_eq!(
        (stale.status, stale.cache(), stale.stamp()),
        (200, "stale", 1)
    );

    let never = edge.get("/t/never-cached").await;
    assert_eq!(never.status, 503);
    assert!(!never.header("retry-after").is_empty());
}
