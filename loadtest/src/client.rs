//! The HTTP/1.1 client on the hot path: hyper's connection API with our own pool, capped at
//! `max_connections`, so the tester's cost per request is one pooled `send_request` and every
//! failure can be told apart (connect, reset, timeout) without guessing from a wrapped error.
//!
//! Plain HTTP only: the load targets (API, edge) speak it, and TLS would spend the generator's
//! CPU on handshakes instead of requests.

use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::target::PlannedRequest;

/// Why a request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A response with status ≥ 400.
    Status,
    /// No complete response within `--timeout` (or no free connection within it).
    Timeout,
    /// The TCP connection (or HTTP handshake) could not be made.
    Connect,
    /// The server reset or closed the connection before the response was complete.
    Reset,
    /// Anything else hyper refused (malformed response, …).
    Other,
    /// Never sent: `--max-inflight` requests were already outstanding at its scheduled time.
    Dropped,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Status,
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Reset,
        ErrorKind::Other,
        ErrorKind::Dropped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Status => "status",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Other => "other",
            ErrorKind::Dropped => "dropped",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response (any status; the recorder decides what counts as ok).
    Response {
        status: u16,
        bytes: u64,
    },
    Failed {
        kind: ErrorKind,
        detail: String,
    },
}

/// The result of [`Client::send`].
#[derive(Debug)]
pub struct Sent {
    /// When the request got a connection slot and started; its "send latency" runs from here.
    pub sent_at: Instant,
    pub outcome: Outcome,
}

/// The base URL: where to connect, what to send as `Host`, and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub text: String,
    pub host: String,
    pub port: u16,
    pub authority: String,
    /// The URL's path without a trailing `/` ("" for `http://host:8080`).
    pub prefix: String,
}

impl FromStr for BaseUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "invalid URL {text:?}: scheme {other} is not supported; load the plain-HTTP port"
                ));
            }
            None => return Err(format!("invalid URL {text:?}: expected http://HOST:PORT")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid URL {text:?}: no host"))?;
        if uri.query().is_some() {
            return Err(format!(
                "invalid URL {text:?}: put query strings in the endpoint templates"
            ));
        }
        Ok(BaseUrl {
            text: text.to_string(),
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// Extra request header, `Name: value` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header(pub HeaderName, pub HeaderValue);

impl FromStr for Header {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("invalid header {text:?}: expected 'Name: value'"))?;
        Ok(Header(
            HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| format!("invalid header name {name:?}: {e}"))?,
            HeaderValue::from_str(value.trim())
                .map_err(|e| format!("invalid header value {value:?}: {e}"))?,
        ))
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// A pool of keep-alive HTTP/1.1 connections to one server.
#[derive(Debug)]
pub struct Client {
    addrs: Vec<SocketAddr>,
    host: HeaderValue,
    headers: HeaderMap,
    idle: Mutex<Vec<Sender>>,
    /// One permit per connection: a request holds one while it uses a connection, so there are
    /// never more than `max_connections` sockets.
    permits: Semaphore,
    opened: AtomicU64,
}

impl Client {
    /// Resolves the host once, up front: a per-request lookup would cost the generator CPU and
    /// show resolver latency as server latency.
    pub async fn new(
        url: &BaseUrl,
        headers: &[Header],
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .with_context(|| format!("resolving {}", url.host))?
            .collect();
        if addrs.is_empty() {
            bail!("{} resolved to no address", url.host);
        }
        let mut map = HeaderMap::new();
        for Header(name, value) in headers {
            map.append(name.clone(), value.clone());
        }
        Ok(Client {
            addrs,
            host: HeaderValue::from_str(&url.authority).context("host header")?,
            headers: map,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_connections.max(1)),
            opened: AtomicU64::new(0),
        })
    }

    /// How many TCP connections the client has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Sends one request and reads the whole response body. Waiting for a free connection and
    /// the exchange itself are each bounded by `timeout`.
    pub async fn send(&self, req: &PlannedRequest, timeout: Duration) -> Sent {
        let permit = match tokio::time::timeout(timeout, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => unreachable!("the semaphore is never closed"),
            Err(_) => {
                return Sent {
                    sent_at: Instant::now(),
                    outcome: Outcome::Failed {
                        kind: ErrorKind::Timeout,
                        detail: format!(
                            "no free connection within {timeout:?} (raise --max-connections)"
                        ),
                    },
                };
            }
        };
        let sent_at = Instant::now();
        let outcome = match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed {
                kind: ErrorKind::Timeout,
                detail: format!("no complete response within {timeout:?}"),
            },
        };
        drop(permit);
        Sent { sent_at, outcome }
    }

    async fn exchange(&self, req: &PlannedRequest) -> Outcome {
        let mut sender = match self.checkout().await {
            Ok(sender) => sender,
            Err(err) => {
                return Outcome::Failed {
                    kind: ErrorKind::Connect,
                    detail: err.to_string(),
                };
            }
        };
        let request = self.build(req);
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(err) => return failed(&err),
        };
        let status = response.status().as_u16();
        let reusable = !response
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(err) => return failed(&err),
            }
        }
        // Only a connection whose response was read to the end can carry the next request.
        if reusable && !sender.is_closed() {
            self.idle.lock().expect("pool lock").push(sender);
        }
        Outcome::Response { status, bytes }
    }

    fn build(&self, req: &PlannedRequest) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(req.body.clone()));
        *request.method_mut() = req.method.clone();
        // Templates are validated at parse time, so only a pathological id could fail here.
        *request.uri_mut() =
            Uri::try_from(req.path.as_str()).unwrap_or_else(|_| Uri::from_static("/"));
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        if !req.body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    /// An idle connection that is still usable, or a new one.
    async fn checkout(&self) -> io::Result<Sender> {
        loop {
            let idle = self.idle.lock().expect("pool lock").pop();
            match idle {
                Some(mut sender) => {
                    // A closed one (server keep-alive timeout) is dropped and the next tried.
                    if !sender.is_closed() && sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    async fn connect(&self) -> io::Result<Sender> {
        let mut last = None;
        for addr in &self.addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Requests are small and latency-bound; Nagle would add up to 40 ms.
                    stream.set_nodelay(true)?;
                    let (sender, conn) = http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(io::Error::other)?;
                    tokio::spawn(async move {
                        // Errors surface on the request that was using the connection.
                        let _ = conn.await;
                    });
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    return Ok(sender);
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
    }
}

fn failed(err: &hyper::Error) -> Outcome {
    Outcome::Failed {
        kind: classify(err),
        detail: describe(err),
    }
}

/// Sorts a hyper error into the kinds a report shows. A reset (RST) and a close before the
/// response was complete both mean "the server dropped the connection".
fn classify(err: &hyper::Error) -> ErrorKind {
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => return ErrorKind::Reset,
                io::ErrorKind::TimedOut => return ErrorKind::Timeout,
                _ => {}
            }
        }
        source = e.source();
    }
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return ErrorKind::Reset;
    }
    ErrorKind::Other
}

/// The error and its causes on one line: hyper's top-level message alone ("error reading a
/// body from connection") hides the cause that tells the kinds apart.
fn describe(err: &hyper::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_address_host_and_prefix() {
        let u: BaseUrl = "http://127.0.0.1:8080/api/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8080));
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.prefix, "/api");
        let u: BaseUrl = "http://localhost".parse().unwrap();
        assert_eq!((u.port, u.prefix.as_str()), (80, ""));
        assert!("https://x".parse::<BaseUrl>().is_err());
        assert!("127.0.0.1:8080".parse::<BaseUrl>().is_err());
    }

    #[test]
    fn headers_parse_from_name_colon_value() {
        let h: Header = "X-Test: 1".parse().unwrap();
        assert_eq!(h.0.as_str(), "x-test");
        assert!("nocolon".parse::<Header>().is_err());
    }
}
