//! One `GET` to one backend, read to the end of its body, outside a Pingora proxy session:
//! what the background refreshes and the fast miss path (`downstream/miss.rs`) are made of.
//! Both need the whole body before they can store it, so there is nothing to stream, and
//! Pingora's proxy machinery (a boxed session future of ~18 KB, a task pair with channels
//! between the two sides, the hooks) was most of a miss's cost at the edge.
//!
//! Connections come from one keep-alive pool (`upstream.keepalive_pool`), Pingora's client
//! connector, shared by both users; the timeouts are the peer's (`upstream::peer`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::balancer::{Balancer, InFlight};
use crate::config::EdgeConfig;
use crate::metrics;
use crate::upstream::{self, Failure};

pub struct Fetcher {
    connector: Connector,
    balancer: Arc<Balancer>,
    config: Arc<EdgeConfig>,
}

/// A backend's answer, read up to the size limit the caller gave.
pub struct Fetched {
    pub header: ResponseHeader,
    /// The body, whole, or its first bytes when it was longer than the limit.
    pub body: BytesMut,
    /// Set when the body is longer than the limit: the connection, to read the rest from.
    /// Dropping it closes the connection (it cannot be reused mid-body).
    pub rest: Option<HttpSession>,
}

/// How one try ended without an answer to give.
pub struct TryFailed {
    pub error: Box<Error>,
    pub failure: Failure,
    /// The connection was an idle one from the pool and failed before any response byte:
    /// the backend may never have seen the request (it closed the connection as idle).
    pub stale_connection: bool,
}

impl Fetcher {
    pub fn new(config: Arc<EdgeConfig>, balancer: Arc<Balancer>) -> Self {
        Fetcher {
            connector: Connector::new(Some(ConnectorOptions::new(config.upstream.keepalive_pool))),
            balancer,
            config,
        }
    }

    /// Sends `req` (a GET without a body) to the slot's backend and reads the answer: the
    /// header, and the body up to `max` bytes. `read`: the per-read timeout; nothing waits
    /// past `left`. The backend's health is reported here (a 502–504 counts against it);
    /// `edge_upstream_response_seconds` is observed when the header arrives.
    pub async fn get(
        &self,
        slot: &InFlight,
        req: RequestHeader,
        read: Duration,
        left: Duration,
        max: usize,
    ) -> std::result::Result<Fetched, TryFailed> {
        let backend = slot.backend();
        let (balancer, u) = (&self.balancer, &self.config.upstream);
        let peer = upstream::peer(backend, u, read, left);
        let started = Instant::now();
        let mut reused = false;
        let mut got_header = false;
        let fetched = tokio::time::timeout(left, async {
            let (mut session, r) = self.connector.get_http_session(&peer).await?;
            reused = r;
            session.set_read_timeout(peer.options.read_timeout);
            session.set_write_timeout(peer.options.write_timeout);
            session.write_request_header(Box::new(req)).await?;
            session.finish_request_body().await?;
            session.read_response_header().await?;
            got_header = true;
            let header = session.response_header().cloned().ok_or_else(|| {
                Error::explain(ErrorType::InvalidHTTPHeader, "no response header")
            })?;
            metrics::UPSTREAM_DURATION
                .with_label_values(&[&backend.label])
                .observe(started.elapsed().as_secs_f64());
            let length = crate::headers::content_length(&header.headers);
            let mut body = BytesMut::with_capacity(length.unwrap_or(4096).min(max));
            while let Some(chunk) = session.read_response_body().await? {
                body.extend_from_slice(&chunk);
                if body.len() > max {
                    return Ok((header, body, Some(session)));
                }
            }
            self.connector
                .release_http_session(session, &peer, Some(u.keepalive_timeout.get()))
                .await;
            Ok::<_, Box<Error>>((header, body, None))
        })
        .await;
        let fail = |error: Box<Error>, failure: Failure| {
            failure.count(backend);
            balancer.report_failure(backend);
            TryFailed {
                stale_connection: reused && !got_header && failure != Failure::Timeout,
                error,
                failure,
            }
        };
        let (header, body, rest) = match fetched {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                let failure = Failure::of(&e);
                return Err(fail(e, failure));
            }
            Err(_) => {
                let e = Error::explain(ErrorType::ReadTimedout, "upstream.timeouts.total");
                return Err(fail(e, Failure::Timeout));
            }
        };
        if matches!(header.status.as_u16(), 502..=504) {
            Failure::Status5xx.count(backend);
            balancer.report_failure(backend);
        } else {
            balancer.report_success(backend);
        }
        Ok(Fetched { header, body, rest })
    }
}
