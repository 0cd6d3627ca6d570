//! The fast miss path: a plain `GET` whose key has no entry is fetched, stored and answered
//! here, in the downstream loop, without a Pingora proxy session. Through Pingora a miss cost
//! about four times NGINX's instructions (proxy/README.md): the session's boxed future (~18
//! KB, copied), a `RequestHeader` parsed from the client and cloned for the backend, the
//! response copied through a channel between two tasks, the hooks. A fill has to hold the
//! whole body before it can store it anyway, so here it is read whole ([`Fetcher::get`]),
//! stored, and written to the client in one write, the way a hit is.
//!
//! The rules are the proxy path's (`proxy.rs`), for the requests this path takes:
//! - one fill per key: the first miss leads, the others wait for it (bounded by
//!   `cache.lock_timeout`) and are answered from the cache as hits;
//! - an in-flight slot at a backend not tried yet, queueing (bounded) when all are busy;
//! - a failed connect, a timeout, a reset or a 502–504 is tried again on another backend
//!   while `upstream.retries.attempts` allow, within `upstream.timeouts.total`; a pooled
//!   connection the backend had closed while idle is tried again on the same one;
//! - the client's fields go to the backend without hop-by-hop ones and without
//!   `Accept-Encoding` and validators (the edge stores identity and compresses itself), with
//!   `X-Forwarded-*` as configured;
//! - the answer: from the stored entry when storable (`x-cache-status: miss`, the encoding
//!   the client prefers), else the backend's fields without `Surrogate-Key`; a body longer
//!   than `cache.max_object_size` is streamed on;
//! - no backend: 503 with `Retry-After`; failures: 502 or 504; the connection then closes.
//!
//! The fill itself ([`HitPath::fill`]) is shared with HTTP/2 streams (`miss_h2.rs`); this
//! file writes its outcome for HTTP/1. Stale entries (stale-while-revalidate, stale-if-error)
//! and `HEAD` misses stay on the proxy path: they need its stale handling, and are rare.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use pingora_core::protocols::Stream;
use pingora_error::{ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::hit::{Answer, HitPath, MAX_FIELDS, Served, Simple, connection_field, status_line};
use crate::balancer::{InFlight, Unavailable};
use crate::cache::flight::{self, Join};
use crate::cache::{self, Entry, Lookup};
use crate::fetch::{Fetched, TryFailed};
use crate::forwarded;
use crate::headers::{RETRY_AFTER, SURROGATE_KEY};
use crate::metrics;
use crate::proxy::CacheStatus;

/// Request fields that never go to a backend: hop-by-hop ones (RFC 9110 section 7.6.1, as
/// Pingora strips them) and those a fill replaces (it asks for the full identity body).
pub(super) const NOT_FORWARDED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "accept-encoding",
    "if-none-match",
    "if-modified-since",
];

/// Response fields the edge does not pass on as they came: framing and connection fields
/// (it sets its own) and the tags.
const NOT_RELAYED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "trailer",
    "upgrade",
    SURROGATE_KEY,
];

/// How the tries of one miss ended without an answer from a backend.
pub(super) enum Failed {
    Unavailable(Unavailable),
    Try(TryFailed),
}

impl Failed {
    /// The status and plain-text body the client gets, as on the proxy path: 503 when no
    /// backend could be given (with `Retry-After`), 504 after a timeout, else 502.
    pub(super) fn answer(&self) -> (u16, &'static str) {
        match self {
            Failed::Unavailable(why) => (503, why.message()),
            Failed::Try(t) => crate::proxy::upstream_failure_answer(t.error.etype()),
        }
    }
}

/// What a fill left for the front end (HTTP/1 or h2) to write.
pub(super) enum Filled {
    /// The entry to answer from: this request's fill (`Miss`; stored unless a purge landed
    /// meanwhile), or the fill it waited for (`Hit`).
    Entry(Arc<Entry>, CacheStatus),
    /// The backend's answer may not be stored: it is passed on.
    Relay(Box<Fetched>, InFlight),
    /// No backend answered.
    Failed(Failed),
    /// The fill this request waited for took too long or was not cacheable: the proxy path
    /// goes upstream for it.
    Elsewhere,
}

impl HitPath {
    /// Leads or follows the fill of `key`. The leader builds its backend request with
    /// `request` (only then: a follower needs none), fetches it and stores what may be stored.
    pub(super) async fn fill(
        &self,
        route: usize,
        key: Arc<str>,
        request: impl FnOnce() -> Result<RequestHeader>,
    ) -> Filled {
        let guard = match self.cache.join_fill(&key) {
            Join::Leader(guard) => guard,
            Join::Follower(rx) => {
                if flight::follow(rx, self.cache.config.lock_timeout.get()).await {
                    metrics::CACHE_COALESCED.inc();
                    if let Lookup::Fresh(entry) = self.cache.lookup(&key) {
                        return Filled::Entry(entry, CacheStatus::Hit);
                    }
                }
                return Filled::Elsewhere;
            }
        };
        let fill_seq = self.cache.fill_started();
        let Ok(upstream_req) = request() else {
            return Filled::Elsewhere;
        };
        let (fetched, slot) = match self.fetch(upstream_req).await {
            Ok(done) => done,
            Err(failed) => return Filled::Failed(failed),
        };
        let lifetime = match fetched.rest {
            None => self.cache.storable(Some(route), &fetched.header),
            Some(_) => None,
        };
        let Some(lifetime) = lifetime else {
            // Not stored: the waiting requests go upstream themselves now.
            drop(guard);
            return Filled::Relay(Box::new(fetched), slot);
        };
        drop(slot);
        let header = &fetched.header;
        let entry = Arc::new(cache::build_entry(
            key.len(),
            header,
            fetched.body.freeze(),
            lifetime,
            cache::surrogate_keys(header),
            fill_seq,
            &self.cache.compression,
        ));
        self.cache.store(key, entry.clone());
        drop(guard);
        Filled::Entry(entry, CacheStatus::Miss)
    }

    /// Fills `key` and answers an HTTP/1 request; see the module's comment.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn miss(
        &self,
        stream: &mut Stream,
        req: &Simple<'_>,
        raw: &[u8],
        route: usize,
        key: Arc<str>,
        keepalive: bool,
        start: Instant,
    ) -> Served {
        let filled = self
            .fill(route, key, || self.upstream_request(stream, raw))
            .await;
        let answer = |status| Answer::of(req, route, status, keepalive, start);
        match filled {
            Filled::Entry(entry, status) => self.answer(stream, &entry, answer(status)).await,
            Filled::Relay(fetched, slot) => {
                self.relay(stream, answer(CacheStatus::Miss), *fetched, slot)
                    .await
            }
            Filled::Failed(failed) => self.fail(stream, answer(CacheStatus::Miss), failed).await,
            Filled::Elsewhere => Served::NotFresh,
        }
    }

    /// The request for the backend: the client's, as parsed by the fast path, with the
    /// fields rewritten as the proxy path does.
    fn upstream_request(&self, stream: &Stream, raw: &[u8]) -> Result<RequestHeader> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Request::new(&mut fields);
        if !matches!(parsed.parse(raw), Ok(httparse::Status::Complete(_))) {
            return pingora_error::Error::e_explain(ErrorType::InvalidHTTPHeader, "reparse");
        }
        let target = parsed.path.unwrap_or("/");
        // Without the case-preserving name map: names go out lowercase, as in HTTP/2.
        let mut req =
            RequestHeader::build_no_case("GET", target.as_bytes(), Some(parsed.headers.len()))?;
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let tls = super::Protocol::of_http1(stream).is_tls();
        let mut forwarded = forwarded::Rewrite::new(&self.config.forwarded, peer, tls);
        // Fields named in `Connection` are hop-by-hop too.
        let nominated = |name: &str| {
            parsed
                .headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                .flat_map(|f| f.value.split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        };
        let has_connection = parsed
            .headers
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case("connection"));
        for f in parsed.headers.iter() {
            if NOT_FORWARDED.iter().any(|n| f.name.eq_ignore_ascii_case(n))
                || (has_connection && nominated(f.name))
                || !forwarded.keep(f.name, f.value)
            {
                continue;
            }
            let name = http::HeaderName::from_bytes(f.name.as_bytes()).map_err(|e| {
                pingora_error::Error::because(ErrorType::InvalidHTTPHeader, "name", e)
            })?;
            req.append_header(name, f.value)?;
        }
        forwarded.finish(&mut req)?;
        Ok(req)
    }

    /// The tries: a backend slot (queueing while all are busy), one GET, and again on
    /// another backend after a failure or a 502–504 while retries and backends are left.
    async fn fetch(&self, req: RequestHeader) -> Result<(Fetched, InFlight), Failed> {
        let u = &self.config.upstream;
        let started = Instant::now();
        let max = self.cache.config.max_object_bytes();
        let mut tried: Vec<usize> = Vec::with_capacity(2);
        let mut reconnected = false;
        loop {
            let now = Instant::now();
            let left = u.timeouts.total.get().saturating_sub(now - started);
            if left.is_zero() {
                let e = pingora_error::Error::explain(
                    ErrorType::ReadTimedout,
                    "upstream.timeouts.total exhausted",
                );
                return Err(Failed::Try(TryFailed {
                    error: e,
                    failure: crate::upstream::Failure::Timeout,
                    stale_connection: false,
                }));
            }
            let deadline = now + u.queue_timeout.get().min(left);
            let slot = match self.balancer.acquire(&tried, deadline).await {
                Ok(slot) => slot,
                Err(why) => return Err(Failed::Unavailable(why)),
            };
            tried.push(slot.backend().index);
            let retries_left = tried.len() <= u.retries.attempts;
            let read = u.timeouts.per_try.get();
            match self.fetcher.get(&slot, req.clone(), read, left, max).await {
                Ok(f) => {
                    let status = f.header.status.as_u16();
                    if matches!(status, 502..=504)
                        && retries_left
                        && self.balancer.has_untried(&tried)
                    {
                        metrics::RETRIES.with_label_values(&["status_5xx"]).inc();
                        continue;
                    }
                    return Ok((f, slot));
                }
                Err(t) if t.stale_connection && !reconnected => {
                    // The backend never saw it: the same backend may take it again.
                    reconnected = true;
                    tried.pop();
                    metrics::RETRIES
                        .with_label_values(&["reused_connection"])
                        .inc();
                }
                Err(t) if retries_left => {
                    metrics::RETRIES
                        .with_label_values(&[t.failure.label()])
                        .inc();
                }
                Err(t) => return Err(Failed::Try(t)),
            }
        }
    }

    /// Passes on a response that is not stored: the backend's fields without the tags,
    /// framed by the edge; a body past `max_object_size` is streamed on from the backend.
    async fn relay(
        &self,
        stream: &mut Stream,
        a: Answer,
        fetched: Fetched,
        slot: InFlight,
    ) -> Served {
        let Fetched { header, body, rest } = fetched;
        let mut out = BytesMut::with_capacity(512 + body.len());
        status_line(&mut out, header.status);
        relayed_fields(&mut out, &header, self.cache.compression.enabled);
        let announced = crate::headers::content_length(&header.headers);
        let chunked = rest.is_some() && announced.is_none();
        if chunked {
            out.put_slice(b"Transfer-Encoding: chunked\r\n");
        } else {
            out.put_slice(b"Content-Length: ");
            let length = if rest.is_some() { announced } else { None };
            out.put_slice(
                itoa::Buffer::new()
                    .format(length.unwrap_or(body.len()))
                    .as_bytes(),
            );
            out.put_slice(b"\r\n");
        }
        // A streamed body that breaks off cannot be told apart from a whole one by a client
        // reading to the close; with a length or chunks it can, so keep-alive stays possible.
        let keep = a.keep;
        connection_field(&mut out, keep);
        let status = header.status.as_u16();
        let Some(mut session) = rest else {
            out.put_slice(&body);
            let sent = self.send(stream, &out).await;
            return self.finish(stream, &a, status, sent);
        };
        chunk(&mut out, &body, chunked);
        let mut sent = self.send(stream, &out).await;
        while sent {
            out.clear();
            match session.read_response_body().await {
                Ok(Some(data)) => chunk(&mut out, &data, chunked),
                Ok(None) => {
                    if chunked {
                        out.put_slice(b"0\r\n\r\n");
                        sent = self.send(stream, &out).await;
                    }
                    break;
                }
                Err(e) => {
                    // Mid-body: the client can only be told by closing the connection.
                    tracing::debug!(error = %e, "backend failed mid-body");
                    crate::upstream::Failure::of(&e).count(slot.backend());
                    self.finish(stream, &a, status, true);
                    return Served::Failed;
                }
            }
            if !out.is_empty() {
                sent = self.send(stream, &out).await;
            }
        }
        drop(slot);
        self.finish(stream, &a, status, sent)
    }

    /// No backend could answer: 503 (with `Retry-After`) when none could be given, else 502
    /// or 504; as the proxy path, the connection closes after it.
    async fn fail(&self, stream: &mut Stream, mut a: Answer, failed: Failed) -> Served {
        let (status, body) = failed.answer();
        a.keep = false;
        let mut out = BytesMut::with_capacity(256);
        let code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        status_line(&mut out, code);
        out.put_slice(b"content-type: text/plain; charset=utf-8\r\ncontent-length: ");
        out.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.put_slice(b"\r\ncache-control: no-store\r\nx-cache-status: miss\r\n");
        if status == 503 {
            out.put_slice(RETRY_AFTER.as_bytes());
            out.put_slice(b": ");
            let after = self.balancer.retry_after().as_secs();
            out.put_slice(itoa::Buffer::new().format(after).as_bytes());
            out.put_slice(b"\r\n");
        }
        connection_field(&mut out, false);
        out.put_slice(body.as_bytes());
        let sent = self.send(stream, &out).await;
        self.finish(stream, &a, status, sent);
        Served::Failed
    }
}

/// Appends `data` to `out`, as one chunk when `chunked`.
fn chunk(out: &mut BytesMut, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.put_slice(data);
        out.put_slice(b"\r\n");
    } else {
        out.put_slice(data);
    }
}

/// Whether a backend's response field goes to the client as it came on a miss that is not
/// stored (HTTP/1 and h2): not framing, connection or tags, and not `Vary` when the edge
/// compresses (it sets its own).
pub(super) fn is_relayed(name: &str, compression: bool) -> bool {
    !(NOT_RELAYED.contains(&name) || (compression && name == "vary"))
}

/// The backend's fields as the client gets them on a miss that is not stored, with
/// `x-cache-status` (and `Vary` when the edge compresses, as on the proxy path: a cached
/// route's answers vary by encoding). Framing and `Connection` follow.
fn relayed_fields(out: &mut BytesMut, header: &ResponseHeader, compression: bool) {
    for (name, value) in header.headers.iter() {
        let n = name.as_str();
        if !is_relayed(n, compression) {
            continue;
        }
        out.put_slice(n.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"x-cache-status: miss\r\n");
    if compression {
        out.put_slice(b"Vary: Accept-Encoding\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_tags_are_not_relayed() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("connection", "close"),
            ("surrogate-key", "product-1"),
            ("transfer-encoding", "chunked"),
            ("vary", "Origin"),
            ("etag", "\"x\""),
        ] {
            h.append_header(k, v).unwrap();
        }
        let mut out = BytesMut::new();
        relayed_fields(&mut out, &h, false);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "content-type: application/json\r\nvary: Origin\r\netag: \"x\"\r\nx-cache-status: miss\r\n"
        );
        out.clear();
        relayed_fields(&mut out, &h, true);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "content-type: application/json\r\netag: \"x\"\r\nx-cache-status: miss\r\nVary: Accept-Encoding\r\n"
        );
    }

    #[test]
    fn chunks_are_framed_only_when_asked() {
        let mut out = BytesMut::new();
        chunk(&mut out, b"hello", true);
        chunk(&mut out, b"", true);
        assert_eq!(&out[..], b"5\r\nhello\r\n");
        out.clear();
        chunk(&mut out, b"hello", false);
        assert_eq!(&out[..], b"hello");
    }
}
