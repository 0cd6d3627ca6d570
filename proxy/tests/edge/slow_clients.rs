//! Clients that hold connections without finishing a request: trickled headers, idle
//! keep-alive connections, and more connections than `max_connections`. Real sockets against
//! a real edge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Origin, TestEdge, config};

/// Everything the edge sends until it closes the connection, or `None` if it is still open
/// after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `header` one byte at a time, `every` apart, until the edge closes the connection or
/// the header is all sent. Returns what the edge answered and when it closed, counted from
/// the connect; `None` when it was never closed.
async fn trickle(
    addr: SocketAddr,
    header: &'static [u8],
    every: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let opened = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    for b in header {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        // While waiting, notice a close at once.
        let mut buf = [0u8; 512];
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((Vec::new(), opened.elapsed())),
            Ok(Ok(n)) => {
                let mut got = buf[..n].to_vec();
                let rest = read_until_closed(&mut s, Duration::from_secs(5)).await?;
                got.extend(rest);
                return Some((got, opened.elapsed()));
            }
        }
    }
    let got = read_until_closed(&mut s, Duration::from_secs(5)).await?;
    Some((got, opened.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickled_headers_are_cut_off_at_the_deadline_while_others_are_served() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.max_connections = 1000;
    c.nofile = 0;
    c.listen.header_read_timeout = Duration::from_secs(2).into();
    let edge = TestEdge::start(c);
    let addr = edge.edge().listen;

    // A normal client, throughout the attack.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let normal = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        let (client, url) = (edge.client.clone(), edge.url("/reviews/meta?product_id=7"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    const HEADER: &[u8] =
        b"GET /reviews?product_id=1 HTTP/1.1\r\nHost: edge\r\nUser-Agent: slow\r\n\r\n";
    let wave: Vec<_> = (0..300)
        .map(|_| tokio::spawn(trickle(addr, HEADER, Duration::from_millis(500))))
        .collect();
    let mut closed_after = Vec::new();
    for t in wave {
        let (answer, after) = t
            .await
            .unwrap()
            .expect("the edge closed the slow connection");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 408"),
            "a slow header gets 408 or a bare close, got {text:?}"
        );
        closed_after.push(after);
    }
    stop.store(true, Ordering::Relaxed);
    normal.await.unwrap();

    closed_after.sort();
    let latest = *closed_after.last().unwrap();
    assert!(
        latest <= Duration::from_secs(3),
        "every slow connection is closed within the 2 s deadline plus 1 s; the last took {latest:?}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the normal client never failed"
    );
    assert!(
        served.load(Ordering::Relaxed) >= 10,
        "the normal client was served meanwhile"
    );
    // The registry is per process: other tests may add timeouts of their own.
    let m = edge.metrics().await;
    let counted: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("edge_client_timeouts_total{kind=\"header\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        counted >= 300.0,
        "the 300 timeouts are counted, got {counted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_sent_in_pieces_within_the_deadline_is_served() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.listen.header_read_timeout = Duration::from_secs(3).into();
    let edge = TestEdge::start(c);
    let (answer, _) = trickle(
        edge.edge().listen,
        b"GET /t/pieces HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n",
        Duration::from_millis(20),
    )
    .await
    .expect("closed after the answer");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.listen.keepalive_timeout = Duration::from_secs(1).into();
    let edge = TestEdge::start(c);
    let mut s = TcpStream::connect(edge.edge().listen).await.unwrap();
    s.write_all(b"GET /t/idle HTTP/1.1\r\nHost: e\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    let rest = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    assert!(rest.is_empty(), "closed without another answer");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "not before the keep-alive timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_connections_count_toward_max_connections() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.max_connections = 2;
    c.nofile = 0;
    c.max_connections_wait = Duration::from_millis(50).into();
    let edge = TestEdge::start(c);
    let addr = edge.edge().listen;
    // Two idle connections that never send a byte hold both slots...
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a third is told 503 and closed.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /t/third HTTP/1.1\r\nHost: e\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("the third connection is closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    // A slot comes back when a connection closes.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    fourth
        .write_all(b"GET /t/fourth HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut fourth, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert_eq!(origin.state.count("/t/third"), 0);
}
