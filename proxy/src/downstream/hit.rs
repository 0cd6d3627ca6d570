//! The cache-hit fast path. A hit is what the edge exists for, yet through Pingora's proxy
//! path it paid for a whole proxy session: a boxed ~10 KB future, a parsed `RequestHeader`
//! with its `HeaderMap`, the per-request context, a cloned `ResponseHeader` with four inserted
//! fields, and the hooks. That made an identity hit cost more than NGINX's (which reads the
//! cached file with two `pread`s). Here the downstream loop reads the request header itself
//! and, when it is a plain `GET`/`HEAD` whose key has a fresh entry, writes the stored
//! response straight to the socket: one parse, one lookup, one write.
//!
//! Anything else goes to Pingora untouched: the bytes read so far become the session's
//! pipelined prefix, so Pingora parses exactly what the client sent (framing checks, 4xx
//! answers, stale serving and misses all stay where they are). The fast path only takes a
//! request when nothing about it needs judgement:
//!
//! - it parses strictly (`httparse`), within `listen.max_header_bytes` and `max_headers`;
//! - `GET` or `HEAD`, HTTP/1.1 with exactly one `Host` or HTTP/1.0 with at most one;
//! - an origin-form target of plain URI characters, with no control character, escaped or not;
//! - no `Content-Length`, `Transfer-Encoding`, `Expect` or `Upgrade` (no body, no protocol
//!   switch), no `Authorization` or `Cookie` (never served from the cache);
//! - its route is cached, its key is well formed, and the entry is fresh.
//!
//! The answer is byte for byte what the proxy path sends for a hit (same fields, same
//! order, `Connection` as Pingora sets it), and it is counted in the same metrics series.
//!
//! A plain `GET` whose key has no entry at all is not handed over either: `miss.rs` fills it
//! from here.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::balancer::Balancer;
use crate::cache::encoding::{Accepts, Encoding, parse_accept_encoding};
use crate::cache::{Cache, Entry, Lookup, key::cache_key};
use crate::config::EdgeConfig;
use crate::fetch::Fetcher;
use crate::metrics::RequestSeries;
use crate::proxy::CacheStatus;

use super::Guarded;
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::v2::server as h2server;
use pingora_http::ResponseHeader;

/// Field slots for the strict parse; a request with more goes to Pingora (which applies
/// `listen.max_headers` and answers 431 itself).
pub(super) const MAX_FIELDS: usize = 64;

/// What the downstream loop does with the connection next.
pub enum Next {
    /// Nothing more on this connection: the client closed, a deadline passed, or the answer
    /// said `Connection: close`.
    Close,
    /// A hit was answered; read the next request.
    Served,
    /// Pingora takes this request: `prefix` is everything read and not answered. `whole`:
    /// it holds more than the request's header (a body may follow, or pipelined requests
    /// did), so what comes next on the connection is Pingora's to read.
    Proxy { prefix: BytesMut, whole: bool },
}

/// The parts of the edge the fast path reads.
pub struct HitPath {
    pub cache: Arc<Cache>,
    pub config: Arc<EdgeConfig>,
    pub series: Arc<RequestSeries>,
    pub balancer: Arc<Balancer>,
    pub fetcher: Arc<Fetcher>,
}

/// A request the fast path may answer.
pub(super) struct Simple<'a> {
    pub head: bool,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub keepalive: bool,
    pub accept_encoding: Option<&'a [u8]>,
    /// Length of the header block.
    pub len: usize,
}

enum Parse<'a> {
    /// More bytes needed.
    Partial,
    Simple(Simple<'a>),
    /// A complete header the fast path leaves to Pingora; `len` is its length, `body` whether
    /// a body may follow it.
    Other {
        len: usize,
        body: bool,
    },
    /// Unparseable: Pingora answers it (400) from the same bytes.
    Invalid,
}

impl HitPath {
    /// Reads the next request into `pending` (which may already hold it, pipelined) and
    /// answers it if it is a fresh hit. `keepalive`: whether the connection may stay open
    /// after this answer (not shutting down, requests left). `closing` ends an idle wait.
    pub async fn next(
        &self,
        stream: &mut Stream,
        pending: &mut BytesMut,
        keepalive: bool,
        closing: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Next {
        let listen = &self.config.listen;
        let max_bytes = listen.max_header_bytes.bytes() as usize;
        loop {
            if !pending.is_empty() {
                match parse(pending, max_bytes, listen.max_headers) {
                    Parse::Partial => {}
                    Parse::Invalid => {
                        return Next::Proxy {
                            prefix: pending.split(),
                            whole: true,
                        };
                    }
                    Parse::Other { len, body } => {
                        received(stream);
                        return hand_over(pending, len, body);
                    }
                    Parse::Simple(req) => {
                        received(stream);
                        let len = req.len;
                        let served = self.serve(stream, &req, &pending[..len], keepalive).await;
                        return match served {
                            Served::Answered { keep } => {
                                pending.advance(len);
                                if keep { Next::Served } else { Next::Close }
                            }
                            Served::Failed => Next::Close,
                            Served::NotFresh => hand_over(pending, len, false),
                        };
                    }
                }
                if pending.len() > max_bytes {
                    // Too large for the fast path: Pingora reads on and answers 431.
                    return Next::Proxy {
                        prefix: pending.split(),
                        whole: true,
                    };
                }
            }
            pending.reserve(4096);
            let read = if pending.is_empty() {
                // Idle between requests: a graceful shutdown's last call ends the wait.
                tokio::select! {
                    biased;
                    r = stream.read_buf(pending) => r,
                    _ = closing.wait_for(|c| *c) => return Next::Close,
                }
            } else {
                stream.read_buf(pending).await
            };
            match read {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            }
        }
    }

    /// The route index and cache key of a cacheable `path?query`, if it is one.
    pub(super) fn cacheable(&self, path: &str, query: Option<&str>) -> Option<(usize, String)> {
        let cache = &self.cache;
        if !cache.config.enabled {
            return None;
        }
        let route = cache.config.routes.iter().position(|r| r.matches(path))?;
        let key = cache_key(path, query, &cache.config.routes[route])?;
        Some((route, key))
    }

    /// A fresh hit is answered from the cache; a `GET` whose key has no entry at all goes
    /// upstream from here (`miss.rs`). Stale entries, `HEAD` misses and everything else are
    /// Pingora's.
    async fn serve(
        &self,
        stream: &mut Stream,
        req: &Simple<'_>,
        raw: &[u8],
        keepalive: bool,
    ) -> Served {
        let start = Instant::now();
        let Some((route, key)) = self.cacheable(req.path, req.query) else {
            return Served::NotFresh;
        };
        match self.cache.lookup(&key) {
            Lookup::Fresh(entry) => {
                let answer = Answer::of(req, route, CacheStatus::Hit, keepalive, start);
                self.answer(stream, &entry, answer).await
            }
            Lookup::Miss if !req.head => {
                self.miss(stream, req, raw, route, key.into(), keepalive, start)
                    .await
            }
            _ => Served::NotFresh,
        }
    }

    /// Writes a stored response: the best encoding the client accepts, `Age` on a hit.
    pub(super) async fn answer(&self, stream: &mut Stream, entry: &Entry, a: Answer) -> Served {
        let cache = &self.cache;
        let (enc, body) = entry.body_for(a.accepts, &cache.compression);
        let status = entry.header.status;

        let mut out = BytesMut::with_capacity(384 + if a.head { 0 } else { body.len() });
        status_line(&mut out, status);
        entry.header.header_to_h1_wire(&mut out);
        out.put_slice(b"Content-Length: ");
        out.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.put_slice(b"\r\n");
        if let Some(v) = enc.header_value() {
            out.put_slice(b"Content-Encoding: ");
            out.put_slice(v.as_bytes());
            out.put_slice(b"\r\n");
        }
        if a.status == CacheStatus::Hit {
            out.put_slice(b"Age: ");
            out.put_slice(
                itoa::Buffer::new()
                    .format(entry.age(a.start).as_secs())
                    .as_bytes(),
            );
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"x-cache-status: ");
        out.put_slice(a.status.as_str().as_bytes());
        out.put_slice(b"\r\n");
        connection_field(&mut out, a.keep);
        if !a.head {
            out.put_slice(&body);
        }
        let sent = self.send(stream, &out).await;
        self.finish(stream, &a, status.as_u16(), sent)
    }

    /// Writes `out` within `listen.send_timeout`.
    pub(super) async fn send(&self, stream: &mut Stream, out: &[u8]) -> bool {
        let send_timeout = self.config.listen.send_timeout.get();
        let sent = tokio::time::timeout(send_timeout, async {
            stream.write_all(out).await?;
            stream.flush().await
        })
        .await;
        matches!(sent, Ok(Ok(())))
    }

    /// Counts an answer in the request series (and a failed send as a client abort).
    pub(super) fn finish(&self, stream: &Stream, a: &Answer, status: u16, sent: bool) -> Served {
        self.series.observe(
            Some(a.route),
            if a.head { "HEAD" } else { "GET" },
            status,
            a.status as usize,
            super::Protocol::of_http1(stream) as usize,
            a.start.elapsed().as_secs_f64(),
        );
        if sent {
            Served::Answered { keep: a.keep }
        } else {
            crate::metrics::CLIENT_ABORTS
                .with_label_values(&["response"])
                .inc();
            Served::Failed
        }
    }
}

/// What an answer on the HTTP/1 fast paths is about.
pub(super) struct Answer {
    pub head: bool,
    pub route: usize,
    pub status: CacheStatus,
    pub accepts: Accepts,
    /// Whether the connection stays open after it.
    pub keep: bool,
    /// When the request header was in.
    pub start: Instant,
}

impl Answer {
    pub(super) fn of(
        req: &Simple<'_>,
        route: usize,
        status: CacheStatus,
        keepalive: bool,
        start: Instant,
    ) -> Answer {
        Answer {
            head: req.head,
            route,
            status,
            accepts: parse_accept_encoding(req.accept_encoding),
            keep: keepalive && req.keepalive,
            start,
        }
    }
}

/// `HTTP/1.1 200 OK\r\n`, the reason phrase as Pingora writes it.
pub(super) fn status_line(out: &mut BytesMut, status: http::StatusCode) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
}

/// The last field and the end of the header, as Pingora sets `Connection`.
pub(super) fn connection_field(out: &mut BytesMut, keep: bool) {
    out.put_slice(if keep {
        &b"Connection: keep-alive\r\n\r\n"[..]
    } else {
        &b"Connection: close\r\n\r\n"[..]
    });
}

/// What the fast path did with an HTTP/2 stream's request.
pub enum H2Served {
    /// Answered: a hit, or a miss filled here.
    Hit,
    /// The client reset the stream or stopped reading: counted like an abandoned request.
    Failed,
    /// Not a fresh hit the fast path may answer: Pingora takes the request, untouched.
    NotFresh,
}

impl HitPath {
    /// The HTTP/2 twin of [`HitPath::next`]: answers a stream's request from the cache when it
    /// is a plain `GET`/`HEAD` without a body whose key has a fresh entry. Same rules on the
    /// target and fields, same response fields as the proxy path sends for an h2 hit, same
    /// series. The codec has already applied the `[h2]` limits and checked the framing.
    pub async fn serve_h2(&self, s: &mut h2server::HttpSession) -> H2Served {
        let start = Instant::now();
        let req = s.req_header();
        let head = match req.method {
            http::Method::GET => false,
            http::Method::HEAD => true,
            _ => return H2Served::NotFresh,
        };
        let (path, query) = (req.uri.path(), req.uri.query());
        if !plain_target(path, query)
            || !s.is_body_empty()
            || req.headers.contains_key(http::header::AUTHORIZATION)
            || req.headers.contains_key(http::header::COOKIE)
        {
            return H2Served::NotFresh;
        }
        let Some((route, key)) = self.cacheable(path, query) else {
            return H2Served::NotFresh;
        };
        let accepts = parse_accept_encoding(
            req.headers
                .get(http::header::ACCEPT_ENCODING)
                .map(|v| v.as_bytes()),
        );
        let a = H2Answer {
            head,
            route,
            status: CacheStatus::Hit,
            accepts,
            start,
        };
        match self.cache.lookup(&key) {
            Lookup::Fresh(entry) => self.answer_h2(s, &entry, a).await,
            Lookup::Miss if !head => self.miss_h2(s, key.into(), a).await,
            _ => H2Served::NotFresh,
        }
    }

    /// Writes a stored response on an h2 stream: the best encoding the client accepts,
    /// `Age` on a hit.
    pub(super) async fn answer_h2(
        &self,
        s: &mut h2server::HttpSession,
        entry: &Entry,
        a: H2Answer,
    ) -> H2Served {
        let (enc, body) = entry.body_for(a.accepts, &self.cache.compression);
        let status = entry.header.status;
        let age = (a.status == CacheStatus::Hit).then(|| entry.age(a.start));
        let header = match h2_header(&entry.header, body.len(), age, enc, a.status) {
            Ok(h) => h,
            Err(_) => return H2Served::NotFresh,
        };
        let end = a.head || body.is_empty();
        let mut sent = s.write_response_header(header, end);
        if sent.is_ok() && !end {
            s.write_body(body, true)
                .await
                .map_or_else(|e| sent = Err(e), |()| ());
        }
        self.finish_h2(&a, status.as_u16(), sent.is_ok())
    }

    /// Counts an h2 answer in the request series (and a failed send as a client abort).
    pub(super) fn finish_h2(&self, a: &H2Answer, status: u16, sent: bool) -> H2Served {
        self.series.observe(
            Some(a.route),
            if a.head { "HEAD" } else { "GET" },
            status,
            a.status as usize,
            super::Protocol::H2 as usize,
            a.start.elapsed().as_secs_f64(),
        );
        if sent {
            H2Served::Hit
        } else {
            crate::metrics::CLIENT_ABORTS
                .with_label_values(&["response"])
                .inc();
            H2Served::Failed
        }
    }
}

/// What an answer on the h2 fast paths is about.
#[derive(Clone, Copy)]
pub(super) struct H2Answer {
    pub head: bool,
    pub route: usize,
    pub status: CacheStatus,
    pub accepts: Accepts,
    pub start: Instant,
}

/// The stored header with the fields an answer from the cache adds, in the order the proxy
/// path adds them (`Age` on hits only).
fn h2_header(
    stored: &ResponseHeader,
    length: usize,
    age: Option<std::time::Duration>,
    enc: Encoding,
    status: CacheStatus,
) -> pingora_error::Result<Box<ResponseHeader>> {
    let mut h = Box::new(stored.clone());
    h.append_header(http::header::CONTENT_LENGTH, length)?;
    if let Some(v) = enc.header_value() {
        h.append_header(http::header::CONTENT_ENCODING, v)?;
    }
    if let Some(age) = age {
        h.append_header(http::header::AGE, age.as_secs())?;
    }
    h.append_header("x-cache-status", status.as_str())?;
    Ok(h)
}

/// Gives Pingora every byte read so far; see [`Next::Proxy`].
fn hand_over(pending: &mut BytesMut, header_len: usize, body: bool) -> Next {
    let whole = body || pending.len() > header_len;
    Next::Proxy {
        prefix: pending.split(),
        whole,
    }
}

pub(super) enum Served {
    /// Answered (a hit, or a miss fetched here); `keep`: the connection stays open.
    Answered { keep: bool },
    /// The write failed or timed out: the connection is done.
    Failed,
    /// Not one for the fast paths (or not cacheable after all): Pingora takes the request.
    NotFresh,
}

/// Marks the header as complete, so the header deadline no longer applies to this request.
fn received(stream: &Stream) {
    if let Some(g) = Guarded::of(stream) {
        g.header_received();
    }
}

/// Bytes allowed in a fast-path request target: RFC 3986 unreserved, sub-delims, `:@/?%`.
/// Anything else (a space, `"`, `{`, non-ASCII…) is left to Pingora, which escapes or refuses it.
fn plain_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// The one rule on targets both fast paths (HTTP/1 and h2) answer: origin form, plain bytes
/// only, no control character escaped in the path.
fn plain_target(path: &str, query: Option<&str>) -> bool {
    path.starts_with('/')
        && path.bytes().all(plain_target_byte)
        && query.is_none_or(|q| q.bytes().all(plain_target_byte))
        && !crate::framing::escaped_control(path.as_bytes())
}

fn parse(buf: &[u8], max_bytes: usize, max_fields: usize) -> Parse<'_> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Invalid,
    };
    let other = |body| Parse::Other { len, body };
    let mut hosts = 0;
    let mut connection: [&[u8]; 4] = [b""; 4];
    let mut connections = 0;
    let mut accept_encoding = None;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") || is("transfer-encoding") || is("expect") {
            return other(true);
        } else if is("host") {
            hosts += 1;
        } else if is("authorization") || is("cookie") || is("upgrade") {
            return other(false);
        } else if is("connection") {
            if connections == connection.len() {
                return other(false);
            }
            connection[connections] = f.value;
            connections += 1;
        } else if is("accept-encoding") && accept_encoding.is_none() {
            accept_encoding = Some(f.value);
        }
    }
    let version = req.version.unwrap_or(1);
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return other(false),
    };
    let target = req.path.unwrap_or("");
    let hosts_ok = if version == 1 { hosts == 1 } else { hosts <= 1 };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if len > max_bytes || req.headers.len() > max_fields || !hosts_ok || !plain_target(path, query)
    {
        return other(false);
    }
    Parse::Simple(Simple {
        head,
        path,
        query,
        keepalive: crate::headers::keeps_alive(
            version == 0,
            connection[..connections].iter().copied(),
        ),
        accept_encoding,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(raw: &str) -> bool {
        matches!(parse(raw.as_bytes(), 16 << 10, 96), Parse::Simple(_))
    }

    #[test]
    fn only_plain_reads_take_the_fast_path() {
        assert!(simple(
            "GET /reviews?product_id=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(simple("HEAD /reviews HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(simple("GET /reviews HTTP/1.0\r\n\r\n"));
        for other in [
            "POST /reviews HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /reviews HTTP/1.1\r\n\r\n",
            "GET /reviews HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET /reviews HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "GET /reviews HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /reviews HTTP/1.1\r\nHost: x\r\nCookie: a=b\r\n\r\n",
            "GET /reviews HTTP/1.1\r\nHost: x\r\nauthorization: x\r\n\r\n",
            "GET /reviews HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
            "GET /re%00views HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /re%7fviews HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://x/reviews HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /r\"x HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: a\r\nConnection: b\r\nConnection: c\r\nConnection: d\r\nConnection: close\r\n\r\n",
        ] {
            assert!(!simple(other), "{other:?}");
        }
        assert!(matches!(
            parse(b"GET /reviews HTTP/1.1\r\nHo", 16 << 10, 96),
            Parse::Partial
        ));
        assert!(matches!(
            parse(b"GET /reviews HTTP/1.1\r\nHo st: x\r\n\r\n", 16 << 10, 96),
            Parse::Invalid
        ));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_tokens() {
        let keep = |raw: &str| match parse(raw.as_bytes(), 16 << 10, 96) {
            Parse::Simple(s) => s.keepalive,
            _ => panic!("not simple: {raw:?}"),
        };
        assert!(keep("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!keep(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }
}
