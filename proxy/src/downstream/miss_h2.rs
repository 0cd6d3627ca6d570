//! The fast miss path for HTTP/2 streams: the same fill as HTTP/1's (`miss.rs`), written as an
//! h2 response. The backend is spoken to in HTTP/1.1, so the request gets a `Host` from the
//! stream's `:authority`, as Pingora's proxy path sets it.

use std::sync::Arc;

use bytes::Bytes;
use pingora_core::protocols::http::v2::server as h2server;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use super::hit::{H2Answer, H2Served, HitPath};
use super::miss::{Failed, Filled, NOT_FORWARDED, is_relayed};
use crate::balancer::InFlight;
use crate::fetch::Fetched;
use crate::forwarded;
use crate::headers::{RETRY_AFTER, X_CACHE_STATUS};
use crate::proxy::CacheStatus;

impl HitPath {
    /// Fills `key` and answers the stream.
    pub(super) async fn miss_h2(
        &self,
        s: &mut h2server::HttpSession,
        key: Arc<str>,
        a: H2Answer,
    ) -> H2Served {
        let filled = self
            .fill(a.route, key, || self.upstream_request_h2(s))
            .await;
        let miss = H2Answer {
            status: CacheStatus::Miss,
            ..a
        };
        match filled {
            Filled::Entry(entry, status) => {
                self.answer_h2(s, &entry, H2Answer { status, ..a }).await
            }
            Filled::Relay(fetched, slot) => self.relay_h2(s, miss, *fetched, slot).await,
            Filled::Failed(failed) => self.fail_h2(s, miss, failed).await,
            Filled::Elsewhere => H2Served::NotFresh,
        }
    }

    /// The backend's request: the stream's fields less those never forwarded, `Host` from
    /// `:authority`, forwarding fields as configured (the stream came over TLS).
    fn upstream_request_h2(&self, s: &h2server::HttpSession) -> Result<RequestHeader> {
        let req = s.req_header();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut up =
            RequestHeader::build_no_case("GET", target.as_bytes(), Some(req.headers.len() + 3))?;
        if let Some(authority) = req.uri.authority() {
            up.append_header(http::header::HOST, authority.as_str())?;
        }
        let peer = s
            .digest()
            .and_then(|d| d.socket_digest.as_ref())
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut fwd = forwarded::Rewrite::new(&self.config.forwarded, peer, true);
        for (name, value) in req.headers.iter() {
            let n = name.as_str();
            let host_twice = n == "host" && req.uri.authority().is_some();
            if host_twice || NOT_FORWARDED.contains(&n) || !fwd.keep(n, value.as_bytes()) {
                continue;
            }
            up.append_header(name.clone(), value.clone())?;
        }
        fwd.finish(&mut up)?;
        Ok(up)
    }

    /// Passes on a response that is not stored, streaming a body past `max_object_size`.
    async fn relay_h2(
        &self,
        s: &mut h2server::HttpSession,
        a: H2Answer,
        fetched: Fetched,
        slot: InFlight,
    ) -> H2Served {
        let Fetched { header, body, rest } = fetched;
        let status = header.status.as_u16();
        let Ok(mut h) = ResponseHeader::build_no_case(header.status, Some(header.headers.len()))
        else {
            return H2Served::Failed;
        };
        let compression = self.cache.compression.enabled;
        for (name, value) in header.headers.iter() {
            if !is_relayed(name.as_str(), compression) {
                continue;
            }
            let _ = h.append_header(name.clone(), value.clone());
        }
        let _ = h.append_header(X_CACHE_STATUS, "miss");
        if compression {
            let _ = h.append_header(http::header::VARY, "Accept-Encoding");
        }
        let length = match &rest {
            None => Some(body.len()),
            Some(_) => crate::headers::content_length(&header.headers),
        };
        if let Some(l) = length {
            let _ = h.append_header(http::header::CONTENT_LENGTH, l);
        }
        let whole = rest.is_none();
        let mut sent = s.write_response_header(Box::new(h), whole && body.is_empty());
        if sent.is_ok() && !(whole && body.is_empty()) {
            sent = s.write_body(body.freeze(), whole).await;
        }
        if let (Ok(()), Some(mut session)) = (&sent, rest) {
            loop {
                match session.read_response_body().await {
                    Ok(Some(data)) => {
                        if s.write_body(data, false).await.is_err() {
                            return self.finish_h2(&a, status, false);
                        }
                    }
                    Ok(None) => {
                        sent = s.write_body(Bytes::new(), true).await;
                        break;
                    }
                    Err(e) => {
                        // Mid-body: the stream is reset, which the client sees as a failure.
                        tracing::debug!(error = %e, "backend failed mid-body");
                        crate::upstream::Failure::of(&e).count(slot.backend());
                        self.finish_h2(&a, status, true);
                        return H2Served::Failed;
                    }
                }
            }
        }
        drop(slot);
        self.finish_h2(&a, status, sent.is_ok())
    }

    /// No backend could answer: 503 (with `Retry-After`), 502 or 504, as on HTTP/1.
    async fn fail_h2(
        &self,
        s: &mut h2server::HttpSession,
        a: H2Answer,
        failed: Failed,
    ) -> H2Served {
        let (status, body) = failed.answer();
        let header = (|| {
            let mut h = ResponseHeader::build_no_case(status, Some(6))?;
            h.append_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
            h.append_header(http::header::CONTENT_LENGTH, body.len())?;
            h.append_header(http::header::CACHE_CONTROL, "no-store")?;
            h.append_header(X_CACHE_STATUS, "miss")?;
            if status == 503 {
                h.append_header(RETRY_AFTER, self.balancer.retry_after().as_secs())?;
            }
            Ok::<_, Box<pingora_error::Error>>(h)
        })();
        let Ok(h) = header else {
            return H2Served::Failed;
        };
        let mut sent = s.write_response_header(Box::new(h), false);
        if sent.is_ok() {
            sent = s
                .write_body(Bytes::from_static(body.as_bytes()), true)
                .await;
        }
        self.finish_h2(&a, status, sent.is_ok())
    }
}
