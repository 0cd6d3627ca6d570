//! The hit fast path (`proxy/src/downstream/hit.rs`) against the proxy path: the same bytes
//! for the same entry, and requests of both kinds pipelined on one connection answered in
//! order.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Origin, TestEdge, config};

/// Sends `raw` on a new connection and reads until `n` responses (bodies by Content-Length,
/// or chunked) have arrived; returns each response's header block and body, unchunked.
pub async fn exchange(addr: std::net::SocketAddr, raw: &[u8], n: usize) -> Vec<(String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16384];
            let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("a response within 5 s")
                .unwrap();
            assert!(got > 0, "closed after {} responses", out.len());
            buf.extend_from_slice(&chunk[..got]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            buf.drain(..end);
            let body = read_chunked(&mut s, &mut buf).await;
            out.push((head, body));
            continue;
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < end + len {
            let mut chunk = [0u8; 16384];
            let got = s.read(&mut chunk).await.unwrap();
            assert!(got > 0);
            buf.extend_from_slice(&chunk[..got]);
        }
        let body = buf[end..end + len].to_vec();
        buf.drain(..end + len);
        out.push((head, body));
    }
    out
}

/// A chunked body from `buf` and then `s`, without extensions or trailers.
async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            fill(s, buf).await;
        };
        let size_text = std::str::from_utf8(&buf[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
        while buf.len() < line_end + 2 + size + 2 {
            fill(s, buf).await;
        }
        body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
        buf.drain(..line_end + 2 + size + 2);
        if size == 0 {
            return body;
        }
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16384];
    let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
        .await
        .expect("more of the body within 5 s")
        .unwrap();
    assert!(got > 0, "closed mid-body");
    buf.extend_from_slice(&chunk[..got]);
}

fn without_age(head: &str) -> String {
    head.lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("age:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_the_same_bytes_on_both_paths() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let addr = edge.edge().listen;
    for accept in ["", "Accept-Encoding: gzip\r\n"] {
        let warm = format!("GET /t/same?x=1 HTTP/1.1\r\nHost: edge\r\n{accept}\r\n");
        exchange(addr, warm.as_bytes(), 1).await;
        // Origin form: the fast path answers. Absolute form: it leaves the request to the
        // proxy, whose request filter finds the same fresh entry.
        let fast = format!("GET /t/same?x=1 HTTP/1.1\r\nHost: edge\r\n{accept}\r\n");
        let proxied = format!("GET http://edge/t/same?x=1 HTTP/1.1\r\nHost: edge\r\n{accept}\r\n");
        let a = exchange(addr, fast.as_bytes(), 1).await.remove(0);
        let b = exchange(addr, proxied.as_bytes(), 1).await.remove(0);
        assert!(a.0.contains("x-cache-status: hit"), "{}", a.0);
        assert_eq!(without_age(&a.0), without_age(&b.0), "headers ({accept:?})");
        assert_eq!(a.1, b.1, "bodies ({accept:?})");
    }
    assert_eq!(origin.state.count("/t/same?x=1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_hits_misses_and_writes_are_answered_in_order() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let addr = edge.edge().listen;
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: edge\r\n\r\n");
    exchange(addr, [get("/t/w1"), get("/t/w2")].concat().as_bytes(), 2).await;
    let post = "POST /nocache/post HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\n\r\nhello";
    let send = [
        get("/t/w1"),
        get("/t/w2"),
        get("/t/new"),
        get("/t/w1"),
        post.to_owned(),
        get("/t/w2"),
        get("/t/w1"),
    ]
    .concat();
    let answers = exchange(addr, send.as_bytes(), 7).await;
    let status = |h: &str| {
        h.lines()
            .find_map(|l| l.strip_prefix("x-cache-status: "))
            .unwrap_or("-")
            .to_owned()
    };
    let got: Vec<String> = answers.iter().map(|(h, _)| status(h)).collect();
    assert_eq!(got, ["hit", "hit", "miss", "hit", "bypass", "hit", "hit"]);
    for (i, (h, _)) in answers.iter().enumerate() {
        assert!(h.starts_with("HTTP/1.1 200"), "answer {i}: {h}");
    }
}
