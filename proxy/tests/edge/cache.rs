use std::sync::Arc;
use std::time::Duration;

use reviews_proxy::config::EncodingName;
use reviews_shared::units::ByteSize;
use tokio::sync::Barrier;

use crate::helpers::{Origin, TestEdge, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_then_hits_then_expired_refetches() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    // No stale-while-revalidate window: an expired entry is refetched in the foreground.
    let path = "/t/expiry?cc=public,max-age=1,stale-while-revalidate=0";

    let first = edge.get(path).await;
    assert_eq!((first.status, first.cache()), (200, "miss"));
    let hit = edge.get(path).await;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(
        hit.stamp(),
        first.stamp(),
        "a hit must not reach the origin"
    );
    assert_eq!(origin.state.count(path), 1);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let expired = edge.get(path).await;
    assert_eq!(expired.cache(), "expired");
    assert_eq!(expired.stamp(), 2);
    let hit = edge.get(path).await;
    assert_eq!((hit.cache(), hit.stamp()), ("hit", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inside_stale_while_revalidate_requests_get_the_stale_copy_while_one_background_refresh_runs()
 {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    // The origin takes 400 ms: the stale answers must not wait for it.
    let path = "/t/swr?cc=public,max-age=1&delay_ms=400";
    assert_eq!(edge.get(path).await.cache(), "miss");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (a, b, c) = tokio::join!(edge.get(path), edge.get(path), edge.get(path));
    for r in [&a, &b, &c] {
        assert_eq!((r.cache(), r.stamp()), ("stale", 1));
    }
    // The refresh lands in the background; until then requests keep getting the stale copy.
    let mut fresh = None;
    for _ in 0..100 {
        let r = edge.get(path).await;
        if r.cache() == "hit" {
            fresh = Some(r);
            break;
        }
        assert_eq!((r.cache(), r.stamp()), ("stale", 1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = fresh.expect("the background refresh stored a fresh copy within 5 s");
    assert_eq!(fresh.stamp(), 2);
    // One refresh for all the stale requests.
    assert_eq!(origin.state.count(path), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_origin_request() {
    let origin = Origin::start("a");
    let edge = Arc::new(TestEdge::start(config(&[&origin], "")));
    let path = "/t/coalesce?delay_ms=300";
    let n = 20;
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (edge, barrier) = (edge.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                edge.get(path).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.stamp(), 1);
        statuses.push(r.cache().to_owned());
    }
    assert_eq!(
        origin.state.count(path),
        1,
        "one origin request for {n} concurrent misses"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "miss").count(),
        1,
        "{statuses:?}"
    );
    let edge = Arc::try_unwrap(edge).ok().unwrap();
    drop(edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_store_set_cookie_non_200_and_authorized_requests_are_not_cached() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    for path in [
        "/t/nostore?cc=no-store",
        "/t/private?cc=private,max-age=60",
        "/t/cookie?cookie=1",
        "/t/missing?status=404",
    ] {
        let a = edge.get(path).await;
        let b = edge.get(path).await;
        assert_ne!(b.cache(), "hit", "{path}");
        assert_eq!(
            origin.state.count(path),
            2,
            "{path} must reach the origin every time"
        );
        assert_eq!(
            b.header("set-cookie").is_empty(),
            !path.contains("cookie"),
            "{a:?}"
        );
    }
    // A cached page is never served to a request carrying credentials, nor filled by one.
    let path = "/t/auth";
    let with_auth = edge.get_with(path, &[("authorization", "Bearer x")]).await;
    assert_eq!(with_auth.cache(), "bypass");
    assert_eq!(edge.get(path).await.cache(), "miss");
    assert_eq!(edge.get(path).await.cache(), "hit");
    let cookie = edge.get_with(path, &[("cookie", "a=b")]).await;
    assert_eq!(cookie.cache(), "bypass");
    assert_eq!(origin.state.count(path), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn equal_queries_share_an_entry_as_the_route_says() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let a = edge.get("/reviews?product_id=42").await;
    assert_eq!(a.cache(), "miss");
    let b = edge
        .get("/reviews?sort=relevant&product_id=42&page=1")
        .await;
    assert_eq!((b.cache(), b.stamp()), ("hit", a.stamp()));
    let c = edge.get("/reviews?product_id=42&page=2").await;
    assert_eq!(c.cache(), "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_are_compressed_once_and_served_in_the_form_the_client_accepts() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.compression.encodings = vec![EncodingName::Br, EncodingName::Gzip];
    let edge = TestEdge::start(c);
    let path = "/t/gzip?pad=4000";
    let miss = edge.get_with(path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (miss.cache(), miss.header("content-encoding")),
        ("miss", "gzip")
    );
    assert_eq!(miss.header("vary"), "Accept-Encoding");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&miss.body[..]),
        &mut plain,
    )
    .unwrap();
    assert!(plain.len() > 4000 && miss.body.len() < 1000);

    let identity = edge.get(path).await;
    assert_eq!(
        (identity.cache(), identity.header("content-encoding")),
        ("hit", "")
    );
    assert_eq!(identity.body, plain);
    let br = edge
        .get_with(path, &[("accept-encoding", "gzip, br")])
        .await;
    assert_eq!((br.cache(), br.header("content-encoding")), ("hit", "br"));
    assert_eq!(br.header("vary"), "Accept-Encoding");
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &br.body[..], &mut out).unwrap();
    assert_eq!(out, plain);
    assert_eq!(origin.state.count(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_byte_cap_holds_under_a_flood_of_distinct_keys() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.cache.max_size = ByteSize(256 << 10);
    c.cache.max_object_size = ByteSize(64 << 10);
    let edge = TestEdge::start(c);
    for i in 0..600 {
        let r = edge.get(&format!("/t/flood-{i}?pad=2000")).await;
        assert_eq!(r.status, 200);
    }
    let cache = &edge.edge().cache;
    cache.sync();
    let size = cache.weighted_size();
    assert!(
        size <= 256 << 10,
        "cache holds {size} bytes, over its 256 KiB cap"
    );
    assert!(
        size > 128 << 10,
        "the cache should be near full, holds {size}"
    );
    let m = edge.metrics().await;
    let evictions: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("edge_cache_evictions_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(evictions > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn surrogate_keys_are_not_shown_to_clients_and_every_response_has_a_cache_status() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let r = edge.get("/t/tagged?tag=product-9").await;
    assert_eq!((r.cache(), r.header("surrogate-key")), ("miss", ""));
    let r = edge.get("/t/tagged?tag=product-9").await;
    assert_eq!((r.cache(), r.header("surrogate-key")), ("hit", ""));
    let r = edge.get("/nocache/x").await;
    assert_eq!(r.cache(), "bypass");
}
