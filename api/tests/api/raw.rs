//! HTTP/1.1 over a bare TCP socket, for requests no HTTP client would send (made-up and
//! lower-case methods, invalid UTF-8 in the target, trickled headers) and for watching a
//! connection's life (responses on one connection, the server's close).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far beyond any answer of a healthy server: a guard against hanging the suite, not a bound
/// on how fast the server is.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// A response as read off the wire.
#[derive(Debug, Default)]
pub struct RawResponse {
    /// `None` when the server closed without answering.
    pub status: Option<u16>,
    /// Status line and headers, header names lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends one request on a new connection and reads until the server closes it (the request
/// should say `Connection: close`).
pub async fn send(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // The server may answer and close before taking the whole request (a 413): a failed
        // write is not the test's business, the answer is.
        let _ = stream.write_all(request).await;
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes).await;
        parse(&bytes)
    };
    tokio::time::timeout(HANG_GUARD, exchange)
        .await
        .expect("the server answers or closes")
}

/// Reads one response with a `Content-Length` body off a kept-alive connection.
pub async fn read_response<R: AsyncRead + Unpin>(stream: &mut R) -> RawResponse {
    let read = async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = find(&bytes, b"\r\n\r\n") {
                let mut res = parse(&bytes[..end + 4]);
                let len: usize = res
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while bytes.len() < end + 4 + len {
                    let n = stream.read(&mut buf).await.expect("read the body");
                    assert!(n > 0, "closed mid-body");
                    bytes.extend_from_slice(&buf[..n]);
                }
                res.body = bytes[end + 4..end + 4 + len].to_vec();
                return res;
            }
            let n = stream.read(&mut buf).await.expect("read the head");
            if n == 0 {
                return parse(&bytes);
            }
            bytes.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(HANG_GUARD, read)
        .await
        .expect("a response arrives")
}

/// Waits until the peer closes the connection: end of stream, or a reset. Bytes sent before
/// the close are skipped.
pub async fn closed_by_peer<R: AsyncRead + Unpin>(stream: &mut R) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse(bytes: &[u8]) -> RawResponse {
    let end = find(bytes, b"\r\n\r\n").map_or(bytes.len(), |e| e + 4);
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawResponse {
        status,
        head,
        body: bytes[end..].to_vec(),
    }
}
