//! The fast miss path (`proxy/src/downstream/miss.rs`) against the proxy path: a plain GET
//! miss is fetched, stored and answered by the downstream loop; a request in absolute form
//! takes Pingora's proxy path. Both must send the backend the same fields and the client the
//! same answer (framing aside: the fast path sends a compressed fill with a length, the
//! proxy path chunked).

use std::io::Read;
use std::sync::atomic::Ordering;

use reviews_shared::units::ByteSize;

use crate::helpers::{Origin, TestEdge, config};
use crate::hit_path::exchange;

/// The header block as a sorted list of `name: value` lines, lowercase names, without the
/// status line and the fields that may differ between two answers of the same kind.
fn fields(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = head
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            format!("{}: {}", k.to_ascii_lowercase(), v.trim())
        })
        .filter(|l| {
            !["content-length:", "transfer-encoding:", "date:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    lines.sort();
    lines
}

fn status_line(head: &str) -> &str {
    head.lines().next().unwrap()
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body as JSON, gunzipped when the answer says gzip.
fn json(head: &str, body: &[u8]) -> serde_json::Value {
    let text = if field(head, "content-encoding") == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{e}: {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_answered_alike_on_both_paths_and_stored() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let addr = edge.edge().listen;
    for (i, accept) in ["", "Accept-Encoding: gzip\r\n"].iter().enumerate() {
        // 2,000 bytes of padding: above compression's 1 KiB minimum.
        let path = |who: &str| format!("/t/miss?who={who}&i={i}&pad=2000&tag=p{i}");
        let fast = format!(
            "GET {} HTTP/1.1\r\nHost: edge\r\n{accept}\r\n",
            path("fast")
        );
        let proxied = format!(
            "GET http://edge{} HTTP/1.1\r\nHost: edge\r\n{accept}\r\n",
            path("proxied")
        );
        let a = exchange(addr, fast.as_bytes(), 1).await.remove(0);
        let b = exchange(addr, proxied.as_bytes(), 1).await.remove(0);
        assert_eq!(field(&a.0, "x-cache-status"), Some("miss"), "{}", a.0);
        assert_eq!(status_line(&a.0), status_line(&b.0));
        assert_eq!(fields(&a.0), fields(&b.0), "fields ({accept:?})");
        assert_eq!(field(&a.0, "surrogate-key"), None);
        let (ja, jb) = (json(&a.0, &a.1), json(&b.0, &b.1));
        assert_eq!(ja["pad"], jb["pad"]);
        assert_eq!(ja["origin"], "a");
        // Both were stored: the same request again is a hit with the same body.
        for (request, first) in [(&fast, &ja), (&proxied, &jb)] {
            let again = exchange(addr, request.as_bytes(), 1).await.remove(0);
            assert_eq!(
                field(&again.0, "x-cache-status"),
                Some("hit"),
                "{}",
                again.0
            );
            assert_eq!(&json(&again.0, &again.1), first);
        }
        // One origin request per key (the proxy path sends the absolute form on).
        assert_eq!(origin.state.count(&path("fast")), 1);
        assert_eq!(origin.state.total.load(Ordering::SeqCst), 2 * (i + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_sends_the_backend_the_clients_fields_less_hop_by_hop_ones_as_the_proxy_path() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let addr = edge.edge().listen;
    let sent = |target: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: edge\r\nX-Custom: yes\r\n\
             Connection: keep-alive, x-nominated\r\nX-Nominated: 1\r\nKeep-Alive: timeout=5\r\n\
             TE: trailers\r\nAccept-Encoding: gzip\r\nIf-None-Match: \"v1\"\r\n\
             If-Modified-Since: Tue, 01 Dec 2026 00:00:00 GMT\r\n\
             X-Forwarded-For: 6.6.6.6\r\nUser-Agent: edge-test\r\n\r\n"
        )
    };
    let seen = |answer: &(String, Vec<u8>)| -> Vec<String> {
        let v = json(&answer.0, &answer.1);
        let mut lines: Vec<String> = v["fields"]
            .as_str()
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let fast = exchange(addr, sent("/t/fields?echo=1&k=1").as_bytes(), 1)
        .await
        .remove(0);
    assert_eq!(field(&fast.0, "x-cache-status"), Some("miss"), "{}", fast.0);
    let proxied = exchange(addr, sent("http://edge/t/fields?echo=1&k=2").as_bytes(), 1)
        .await
        .remove(0);
    let (fast, proxied) = (seen(&fast), seen(&proxied));
    assert_eq!(fast, proxied);
    for expected in [
        "host: edge",
        "x-custom: yes",
        "user-agent: edge-test",
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
    ] {
        assert!(fast.iter().any(|l| l == expected), "{expected}: {fast:?}");
    }
    for gone in [
        "connection",
        "x-nominated",
        "keep-alive",
        "te",
        "accept-encoding",
        "if-none-match",
        "if-modified-since",
    ] {
        let prefix = format!("{gone}:");
        assert!(
            !fast.iter().any(|l| l.starts_with(&prefix)),
            "{gone}: {fast:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_fills_are_stored_and_bodies_past_the_object_limit_stream_through() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.cache.max_object_size = ByteSize(4 << 10);
    let edge = TestEdge::start(c);
    let addr = edge.edge().listen;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n");

    // Chunked from the origin, small enough to store: a length to the client, then a hit.
    let small = "/t/chunked?chunked=1&pad=2500";
    let first = exchange(addr, get(small).as_bytes(), 1).await.remove(0);
    assert_eq!(
        field(&first.0, "x-cache-status"),
        Some("miss"),
        "{}",
        first.0
    );
    assert_eq!(field(&first.0, "transfer-encoding"), None, "{}", first.0);
    assert_eq!(
        json(&first.0, &first.1)["pad"].as_str().unwrap().len(),
        2500
    );
    let again = exchange(addr, get(small).as_bytes(), 1).await.remove(0);
    assert_eq!(field(&again.0, "x-cache-status"), Some("hit"));
    assert_eq!(again.1, first.1);

    // Past `max_object_size`: streamed on, whole, with the origin's framing kind, not stored;
    // the connection stays usable for the next request.
    for (path, chunked) in [
        ("/t/big?chunked=1&pad=20000", true),
        ("/t/big?pad=20000", false),
    ] {
        let two = [get(path), get(path)].concat();
        let answers = exchange(addr, two.as_bytes(), 2).await;
        for (head, body) in &answers {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(field(head, "x-cache-status"), Some("miss"), "{head}");
            assert_eq!(
                field(head, "transfer-encoding").is_some(),
                chunked,
                "{head}"
            );
            assert_eq!(json(head, body)["pad"].as_str().unwrap().len(), 20000);
        }
        assert_eq!(origin.state.count(path), 2, "{path}: not stored");
    }
}

/// An origin that answers every request with a body shorter than its `Content-Length`, then
/// closes: a backend dying mid-response.
async fn truncating_origin() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Cache-Control: public, max-age=60\r\nContent-Length: 100\r\n\r\n{\"cut\":",
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_body_is_retried_elsewhere_and_its_half_page_never_stored() {
    let good = Origin::start("good");
    let cut = truncating_origin().await;
    let mut c = config(&[&good], "");
    c.upstream.servers.push(reviews_proxy::Upstream::new(cut));
    c.upstream.health.enabled = false;
    let edge = TestEdge::start(c);
    let addr = edge.edge().listen;
    // Round robin sends some of these to the truncating backend first: each must still be
    // answered whole, by the good one, and stored from it.
    for i in 0..6 {
        let get = format!("GET /t/cut?i={i} HTTP/1.1\r\nHost: edge\r\n\r\n");
        let first = exchange(addr, get.as_bytes(), 1).await.remove(0);
        assert!(first.0.starts_with("HTTP/1.1 200"), "{}", first.0);
        assert_eq!(json(&first.0, &first.1)["origin"], "good");
        let again = exchange(addr, get.as_bytes(), 1).await.remove(0);
        assert_eq!(field(&again.0, "x-cache-status"), Some("hit"));
        assert_eq!(again.1, first.1);
    }
    let m = edge.metrics().await;
    let retries: f64 = m
        .lines()
        .filter(|l| l.starts_with("edge_retries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        retries >= 1.0,
        "the truncating backend was never tried:\n{m}"
    );

    // With only the truncating backend: an error, never a half page, and nothing stored.
    let origin = Origin::start("unused");
    let mut c = config(&[&origin], "");
    c.upstream.servers = vec![reviews_proxy::Upstream::new(cut)];
    c.upstream.health.enabled = false;
    let edge = TestEdge::start(c);
    let get = b"GET /t/cut-only HTTP/1.1\r\nHost: edge\r\n\r\n";
    for _ in 0..2 {
        let answer = exchange(edge.edge().listen, get, 1).await.remove(0);
        assert!(answer.0.starts_with("HTTP/1.1 50"), "{}", answer.0);
        assert_eq!(field(&answer.0, "x-cache-status"), Some("miss"));
    }
}
