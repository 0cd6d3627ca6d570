//! A corpus of raw requests (framing, header syntax, pipelining, sizes) sent over real sockets
//! to a real edge, each with the statuses it must get, in order, and whether the connection
//! must stay open after them. An open connection is proven usable by one more request.
//! What each case expects follows RFC 9112 and what NGINX and HAProxy do; see
//! `proxy/src/framing.rs` and the table in proxy/README.md.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Origin, TestEdge, config};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Open,
    Closed,
}
use After::{Closed, Open};

struct Case {
    name: &'static str,
    send: Vec<u8>,
    /// Final statuses, in order (interim 1xx answers are skipped).
    expect: Vec<u16>,
    after: After,
    /// Indexes of answers to HEAD requests (no body follows their header).
    heads: Vec<usize>,
}

fn case(name: &'static str, send: impl Into<Vec<u8>>, expect: &[u16], after: After) -> Case {
    Case {
        name,
        send: send.into(),
        expect: expect.to_vec(),
        after,
        heads: Vec::new(),
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n")
}

fn post(headers: &str, body: &str) -> String {
    format!("POST /nocache/post HTTP/1.1\r\nHost: edge\r\n{headers}\r\n{body}")
}

fn corpus() -> Vec<Case> {
    let big_value = "x".repeat(17 << 10);
    // With Host and X-Last: 96 fields (the default limit), then 97.
    let at_limit: String = (0..94).map(|i| format!("X-H{i}: v\r\n")).collect();
    let over_limit: String = (0..95).map(|i| format!("X-H{i}: v\r\n")).collect();
    let near_limit = "y".repeat(15 << 10);
    let huge_header = "z".repeat(1100 << 10);
    let long_uri = format!("/t/{}", "u".repeat(17 << 10));
    vec![
        // Plain requests and bodies.
        case("get", get("/t/get"), &[200], Open),
        case(
            "head",
            "HEAD /t/head HTTP/1.1\r\nHost: edge\r\n\r\n",
            &[200],
            Open,
        )
        .head(0),
        case(
            "post with length",
            post("Content-Length: 5\r\n", "hello"),
            &[200],
            Open,
        ),
        case(
            "post with empty length",
            post("Content-Length: 0\r\n", ""),
            &[200],
            Open,
        ),
        case(
            "post chunked",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            &[200],
            Open,
        ),
        case(
            "chunked, capitalised",
            post("Transfer-Encoding: Chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            &[200],
            Open,
        ),
        case(
            "chunked with spaces",
            post(
                "Transfer-Encoding:  chunked \r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            &[200],
            Open,
        ),
        case(
            "chunk extension",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5;ext=1\r\nhello\r\n0\r\n\r\n",
            ),
            &[200],
            Open,
        ),
        case(
            "chunked with a trailer",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            ),
            &[200],
            Open,
        ),
        case(
            "several chunks",
            post(
                "Transfer-Encoding: chunked\r\n",
                "2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
            ),
            &[200],
            Open,
        ),
        case(
            "connection close",
            "GET /t/close HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n",
            &[200],
            Closed,
        ),
        case("http/1.0", "GET /t/ten HTTP/1.0\r\n\r\n", &[200], Closed),
        case(
            "http/1.0 keep-alive",
            "GET /t/ten-ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            &[200],
            Open,
        ),
        case(
            "bare LF line ends",
            "GET /t/lf HTTP/1.1\nHost: edge\n\n",
            &[200],
            Open,
        ),
        case(
            "absolute form",
            "GET http://edge/t/abs HTTP/1.1\r\nHost: edge\r\n\r\n",
            &[200],
            Open,
        ),
        case(
            "empty header value",
            "GET /t/empty HTTP/1.1\r\nHost: edge\r\nX-Empty:\r\n\r\n",
            &[200],
            Open,
        ),
        case("odd percent escapes", get("/t/pct?q=%zz&r=%"), &[200], Open),
        case(
            "unknown method",
            "BREW /t/pot HTTP/1.1\r\nHost: edge\r\n\r\n",
            &[405],
            Open,
        ),
        case(
            "expect 100-continue",
            post("Content-Length: 5\r\nExpect: 100-continue\r\n", "hello"),
            &[200],
            Open,
        ),
        // Ambiguous framing: refused, connection closed (RFC 9112 section 6).
        case(
            "length and chunked",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            &[400],
            Closed,
        ),
        case(
            "chunked and length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            &[400],
            Closed,
        ),
        case(
            "chunked twice in one line",
            post(
                "Transfer-Encoding: chunked, chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            &[400],
            Closed,
        ),
        case(
            "chunked on two lines",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            &[400],
            Closed,
        ),
        case(
            "gzip then chunked",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            &[501],
            Closed,
        ),
        case(
            // Codings that do not end in chunked leave no way to find the body's end:
            // Pingora answers 400 before the edge sees them (RFC 9112 section 6.3).
            "identity coding",
            post("Transfer-Encoding: identity\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "unknown coding",
            post("Transfer-Encoding: xchunked\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "chunked not last",
            post("Transfer-Encoding: chunked, gzip\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "chunked on http/1.0",
            "POST /nocache/post HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "length twice, equal, one line",
            post("Content-Length: 5, 5\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "length twice, equal, two lines",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "length twice, different",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            &[400],
            Closed,
        ),
        case(
            "length with a plus",
            post("Content-Length: +5\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "negative length",
            post("Content-Length: -1\r\n", ""),
            &[400],
            Closed,
        ),
        case(
            "length not a number",
            post("Content-Length: five\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "length too large for any integer",
            post("Content-Length: 99999999999999999999999\r\n", "x"),
            &[400],
            Closed,
        ),
        case(
            "length in hex",
            post("Content-Length: 0x5\r\n", "hello"),
            &[400],
            Closed,
        ),
        case(
            "chunk size not hex",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            &[400],
            Closed,
        ),
        case(
            "chunk size overflows",
            post(
                "Transfer-Encoding: chunked\r\n",
                "fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            &[400],
            Closed,
        ),
        case(
            "chunk data overruns its size",
            post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n"),
            &[400],
            Closed,
        ),
        case(
            "negative chunk size",
            post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"),
            &[400],
            Closed,
        ),
        // Header syntax.
        case(
            "http/1.1 without host",
            "GET /t/nohost HTTP/1.1\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "two hosts",
            "GET /t/hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "space before the colon",
            "GET /t/sp HTTP/1.1\r\nHost : edge\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "bad header name",
            "GET /t/name HTTP/1.1\r\nHost: edge\r\nX(y): 1\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "folded header line",
            "GET /t/fold HTTP/1.1\r\nHost: edge\r\nX-A: a\r\n b\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "NUL in a header value",
            b"GET /t/nul HTTP/1.1\r\nHost: edge\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            &[400],
            Closed,
        ),
        case(
            "header line without colon",
            "GET /t/nocolon HTTP/1.1\r\nHost: edge\r\nX-A\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "two spaces in the request line",
            "GET  /t/two HTTP/1.1\r\nHost: edge\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "unknown version",
            "GET /t/v HTTP/1.2\r\nHost: edge\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "http/2 request line",
            "GET /t/v2 HTTP/2.0\r\nHost: edge\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "no version",
            "GET /t/v0\r\nHost: edge\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "control byte in the path",
            b"GET /t/\x01x HTTP/1.1\r\nHost: edge\r\n\r\n".to_vec(),
            &[400],
            Closed,
        ),
        case(
            "escaped control byte in the path",
            get("/t/%00x"),
            &[400],
            Closed,
        ),
        case(
            "DEL in the path",
            b"GET /t/\x7fx HTTP/1.1\r\nHost: edge\r\n\r\n".to_vec(),
            &[400],
            Closed,
        ),
        case(
            "path without a slash",
            "GET t/x HTTP/1.1\r\nHost: edge\r\n\r\n",
            &[400],
            Closed,
        ),
        case(
            "asterisk form",
            "OPTIONS * HTTP/1.1\r\nHost: edge\r\n\r\n",
            &[404],
            Open,
        ),
        case(
            "connect",
            "CONNECT edge:443 HTTP/1.1\r\nHost: edge:443\r\n\r\n",
            &[405],
            Closed,
        ),
        case(
            "absolute form, other host",
            "GET http://other/t/abs2 HTTP/1.1\r\nHost: edge\r\n\r\n",
            &[400],
            Closed,
        ),
        // Sizes.
        case(
            "header just under the limit",
            format!("GET /t/near HTTP/1.1\r\nHost: edge\r\nX-Big: {near_limit}\r\n\r\n"),
            &[200],
            Open,
        ),
        case(
            "header over the limit",
            format!("GET /t/big HTTP/1.1\r\nHost: edge\r\nX-Big: {big_value}\r\n\r\n"),
            &[431],
            Closed,
        ),
        case("uri over the limit", get(&long_uri), &[431], Closed),
        case(
            "as many header fields as allowed",
            format!("GET /t/at HTTP/1.1\r\nHost: edge\r\nX-Last: 1\r\n{at_limit}\r\n"),
            &[200],
            Open,
        ),
        case(
            "one header field too many",
            format!("GET /t/over HTTP/1.1\r\nHost: edge\r\nX-Last: 1\r\n{over_limit}\r\n"),
            &[431],
            Closed,
        ),
        case(
            "header over a mebibyte",
            format!("GET /t/huge HTTP/1.1\r\nHost: edge\r\nX-Huge: {huge_header}\r\n\r\n"),
            &[400],
            Closed,
        ),
        // Pipelining: every request answered, in order.
        case(
            "two pipelined gets",
            [get("/t/p1"), get("/t/p2")].concat(),
            &[200, 200],
            Open,
        ),
        case(
            "three pipelined gets",
            [get("/t/p3"), get("/t/p4"), get("/t/p5")].concat(),
            &[200, 200, 200],
            Open,
        ),
        case(
            "ten pipelined gets of one page",
            get("/t/p-same").repeat(10),
            &[200; 10],
            Open,
        ),
        case(
            "post then get",
            [post("Content-Length: 5\r\n", "hello"), get("/t/p6")].concat(),
            &[200, 200],
            Open,
        ),
        case(
            "chunked post then get",
            [
                post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
                get("/t/p7"),
            ]
            .concat(),
            &[200, 200],
            Open,
        ),
        case(
            "get then close",
            [
                get("/t/p8"),
                "GET /t/p9 HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n".into(),
            ]
            .concat(),
            &[200, 200],
            Closed,
        ),
        case(
            "get then a bad request",
            [get("/t/p10"), "GET /t/p11 HTTP/1.1\r\n\r\n".into()].concat(),
            &[200, 400],
            Closed,
        ),
        case(
            "head then get",
            [
                "HEAD /t/p12 HTTP/1.1\r\nHost: edge\r\n\r\n".into(),
                get("/t/p13"),
            ]
            .concat(),
            &[200, 200],
            Open,
        )
        .head(0),
        case(
            "get then head",
            [
                get("/t/p14"),
                "HEAD /t/p15 HTTP/1.1\r\nHost: edge\r\n\r\n".into(),
            ]
            .concat(),
            &[200, 200],
            Open,
        )
        .head(1),
        case(
            "pipelined after a refused one",
            [post("Content-Length: 1, 1\r\n", "x"), get("/t/p16")].concat(),
            &[400],
            Closed,
        ),
    ]
}

impl Case {
    fn head(mut self, index: usize) -> Self {
        self.heads.push(index);
        self
    }
}

/// Reads one response from `buf` + the socket: status and body (Content-Length, chunked, or
/// up to the close). `None` when the connection ends first.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head: bool) -> Option<u16> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf).await?;
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let status: u16 = text.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if (100..200).contains(&status) {
        return Box::pin(read_response(s, buf, head)).await;
    }
    if head || status == 204 || status == 304 {
        return Some(status);
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < len {
            fill(s, buf).await?;
        }
        buf.drain(..len);
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(s, buf).await?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            while buf.len() < line_end + 2 + size + 2 {
                fill(s, buf).await?;
            }
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while fill(s, buf).await.is_some() {}
        buf.clear();
    }
    Some(status)
}

/// Reads more into `buf`; `None` at the close (or after 5 s of silence).
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
        _ => None,
    }
}

/// Runs one case; `Err` says how it went wrong.
async fn run(addr: SocketAddr, c: &Case) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // A write may fail once the edge has answered and closed (a refused oversized header).
    let _ = s.write_all(&c.send).await;
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for i in 0..c.expect.len() {
        match read_response(&mut s, &mut buf, c.heads.contains(&i)).await {
            Some(status) => got.push(status),
            None => break,
        }
    }
    if got != c.expect {
        return Err(format!("answers {got:?}, expected {:?}", c.expect));
    }
    let mut probe = [0u8; 1];
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut probe)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    match (c.after, closed) {
        (Open, true) => return Err("the connection was closed".into()),
        (Closed, false) => return Err("the connection stayed open".into()),
        (Closed, true) => return Ok(()),
        (Open, false) => {}
    }
    s.write_all(get("/t/probe").as_bytes())
        .await
        .map_err(|e| format!("the open connection does not take a request: {e}"))?;
    match read_response(&mut s, &mut buf, false).await {
        Some(200) => Ok(()),
        other => Err(format!(
            "the open connection answered the probe with {other:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_of_the_corpus_gets_its_answer_and_connection_state() {
    let origin = Origin::start("a");
    let mut c = config(&[&origin], "");
    c.listen.header_read_timeout = Duration::from_secs(3).into();
    // Seventy connections at once on a busy test machine can make a 100 ms health check miss;
    // this test is about framing, not health.
    c.upstream.health.enabled = false;
    let edge = TestEdge::start(c);
    let addr = edge.edge().listen;
    let cases = corpus();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    // Twice: cold, then with every page the first pass filled in the cache, so the requests
    // the hit fast path reads itself get the same answers as those the proxy reads.
    for pass in ["cold cache", "warm cache"] {
        let results = futures::future::join_all(cases.iter().map(|c| run(addr, c))).await;
        let failures: Vec<String> = cases
            .iter()
            .zip(results)
            .filter_map(|(c, r)| r.err().map(|e| format!("{}: {e}", c.name)))
            .collect();
        assert!(
            failures.is_empty(),
            "{pass}: {} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_body_never_reaches_the_origin() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let addr = edge.edge().listen;
    for send in [
        post(
            "Transfer-Encoding: gzip, chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        post("Content-Length: 5, 5\r\n", "hello"),
        "POST /nocache/post HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
    ] {
        let c = case("refused", send, &[0], Closed);
        let _ = run(addr, &c).await;
    }
    assert_eq!(origin.state.count("/nocache/post"), 0);
}
