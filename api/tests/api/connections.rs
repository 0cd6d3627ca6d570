//! The API's listener against clients that hold connections: a header trickled byte by byte is
//! cut at `server.header_read_timeout`, an idle kept-alive connection lives for
//! `server.keepalive_timeout` (not for the header deadline), connections beyond
//! `server.max_connections` are answered 503 and closed, and shutdown lets an in-flight request
//! finish. Closes are observed on the socket (end of stream or reset), never by timing a sleep.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{Backend, FIXTURE_SQL, TestApp};
use crate::raw::{closed_by_peer, read_response, send};

crate::on_both_backends!(
    trickled_headers_are_cut_at_the_deadline_while_other_clients_are_served,
    an_idle_connection_outlives_the_header_deadline_and_closes_after_keepalive,
    connections_beyond_the_cap_are_answered_503_and_closed,
    shutdown_lets_an_in_flight_request_finish,
);

const GET_LIST: &[u8] = b"GET /reviews?product_id=10 HTTP/1.1\r\nHost: t\r\n\r\n";

async fn trickled_headers_are_cut_at_the_deadline_while_other_clients_are_served(b: Backend) {
    const SLOW_CLIENTS: usize = 200;
    let deadline = Duration::from_secs(1);
    let app = TestApp::with_config(b, |c| {
        c.server.header_read_timeout = deadline.into();
    })
    .await;
    app.exec(FIXTURE_SQL).await;
    let addr = app.addr();

    let mut streams = Vec::with_capacity(SLOW_CLIENTS);
    for _ in 0..SLOW_CLIENTS {
        streams.push(TcpStream::connect(addr).await.unwrap());
    }
    // Each slow client trickles a request head, one byte every 50 ms, and never ends it: only
    // the server's deadline can end the connection.
    let slow = streams.into_iter().map(|stream| async move {
        let (mut read, mut write) = stream.into_split();
        let trickle = async move {
            let head = b"GET /reviews?product_id=10 HTTP/1.1\r\nX-Slow: ";
            for byte in head.iter().copied().chain(std::iter::repeat(b'a')) {
                if write.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        // Either way the server closed the connection: the read sees it, or the next write.
        tokio::select! {
            () = closed_by_peer(&mut read) => {}
            () = trickle => {}
        }
    });
    let slow = tokio::spawn(futures::future::join_all(slow));

    // Meanwhile an ordinary client is served, on new connections and on a kept-alive one.
    for _ in 0..10 {
        assert_eq!(app.get("/reviews?product_id=10").await.status(), 200);
        let close =
            b"GET /reviews/meta?product_id=10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        assert_eq!(send(addr, close).await.status, Some(200));
    }
    let mut kept = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        kept.write_all(GET_LIST).await.unwrap();
        assert_eq!(read_response(&mut kept).await.status, Some(200));
    }

    // All slow connections are closed by the server within the deadline, plus a second for
    // scheduling the closes on a busy machine.
    tokio::time::timeout(deadline + Duration::from_secs(1), slow)
        .await
        .expect("every trickling connection was closed by the deadline")
        .unwrap();
    assert_eq!(app.get("/reviews?product_id=10").await.status(), 200);
    app.teardown().await;
}

async fn an_idle_connection_outlives_the_header_deadline_and_closes_after_keepalive(b: Backend) {
    let header = Duration::from_millis(500);
    let keepalive = Duration::from_secs(3);
    let app = TestApp::with_config(b, |c| {
        c.server.header_read_timeout = header.into();
        c.server.keepalive_timeout = keepalive.into();
    })
    .await;
    app.exec(FIXTURE_SQL).await;
    let mut conn = TcpStream::connect(app.addr()).await.unwrap();
    conn.write_all(GET_LIST).await.unwrap();
    assert_eq!(read_response(&mut conn).await.status, Some(200));
    // Idle for three header deadlines: the connection is still there for the next request.
    tokio::time::sleep(header * 3).await;
    conn.write_all(GET_LIST).await.unwrap();
    assert_eq!(read_response(&mut conn).await.status, Some(200));
    // Then it idles out, closed by the server.
    tokio::time::timeout(keepalive * 3, closed_by_peer(&mut conn))
        .await
        .expect("the idle connection is closed after keepalive_timeout");
    app.teardown().await;
}

async fn connections_beyond_the_cap_are_answered_503_and_closed(b: Backend) {
    const CAP: usize = 3;
    let app = TestApp::with_config(b, |c| c.server.max_connections = CAP as u32).await;
    app.exec(FIXTURE_SQL).await;
    let addr = app.addr();
    // CAP kept-alive connections, each proven open by a response.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(GET_LIST).await.unwrap();
        assert_eq!(read_response(&mut conn).await.status, Some(200));
        held.push(conn);
    }
    // One more is refused at once, with a problem document, and closed.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra.write_all(GET_LIST).await.unwrap();
    let res = read_response(&mut extra).await;
    assert_eq!(res.status, Some(503), "{}", res.head);
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(problem["status"], 503);
    closed_by_peer(&mut extra).await;

    // A freed slot is taken again: the server sees the close asynchronously, so try until it
    // has (each try is itself refused or served, never left hanging).
    held.pop();
    let mut served = false;
    for _ in 0..200 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(GET_LIST).await.unwrap();
        if read_response(&mut conn).await.status == Some(200) {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "a connection was served once one of the held ones closed"
    );
    let page = app
        .client
        .get(format!("{}/metrics", app.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.lines().any(|l| l
            .starts_with(r#"reviews_api_connections_refused_total{listener="public"}"#)
            && !l.ends_with(" 0")),
        "{page}"
    );
    drop(held);
    app.teardown().await;
}

async fn shutdown_lets_an_in_flight_request_finish(b: Backend) {
    let mut app = TestApp::with_fixture(b).await;
    let addr = app.addr();
    let body = crate::helpers::valid_review().to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // `Expect: 100-continue`: the interim answer proves the request is in flight (its head read,
    // the handler reading its body) before shutdown begins.
    let head = format!(
        "POST /reviews HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut conn).await.status, Some(100));
    conn.write_all(first).await.unwrap();

    let stopping = tokio::spawn(app.take_server().shutdown());
    // Shutdown has begun once the listener is gone (nothing accepts new connections).
    let mut tries = 0;
    while TcpStream::connect(addr).await.is_ok() {
        tries += 1;
        assert!(tries < 10_000, "the listener never closed");
        tokio::task::yield_now().await;
    }
    conn.write_all(rest).await.unwrap();
    let res = read_response(&mut conn).await;
    assert_eq!(res.status, Some(201), "{}", res.head);
    closed_by_peer(&mut conn).await;
    stopping.await.unwrap();
    assert_eq!(app.count("reviews").await, 6);
    app.teardown().await;
}
