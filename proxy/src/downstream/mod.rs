//! The client side of the edge: what runs between Pingora's accept and the proxy's hooks.
//!
//! Pingora's HTTP/1 server has no connection limit, times each header read separately and
//! offers no hook between accept and the first request. [`Downstream`] is the `ServerApp`
//! the listener runs instead of the bare proxy: for each accepted connection it
//!
//! 1. takes one of `max_connections` slots, held while the connection is open, idle
//!    keep-alive time included (waiting `max_connections_wait` for one, else answering 503
//!    and closing);
//! 2. wraps the socket in [`Guarded`], which enforces the total header deadline and the
//!    keep-alive idle timeout (see `deadline.rs`);
//! 3. on an HTTPS listener (`[[listen.tls]]`), performs the TLS handshake within
//!    `header_read_timeout` (see `tls.rs`); a client that chose `h2` by ALPN is served by
//!    `http2.rs`, one proxy session per stream, under the `[h2]` limits;
//! 4. otherwise (HTTP/1, plain or TLS) runs the keep-alive loop Pingora's own HTTP app would
//!    run, with pipelining on (requests are answered in order) and the body-read and send
//!    timeouts of `[listen]`: each request header is read by the hit fast path (`hit.rs`),
//!    which answers fresh cache hits itself and hands everything else to the proxy with the
//!    bytes it read.

mod cork;
mod deadline;
mod delegate;
mod hit;
mod http2;
mod miss;
mod miss_h2;
pub mod session_file;
pub(crate) mod sessions;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{ALPN, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use deadline::Guarded;
pub use hit::HitPath;
use http2::H2Settings;
pub use http2::request_aborted;
use tls::TlsEndpoint;

use crate::config::EdgeConfig;
use crate::metrics;
use crate::proxy::Edge;

/// How a request reached the edge (the `protocol` label of `edge_requests_total`, and
/// `X-Forwarded-Proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1 = 0,
    Http1Tls = 1,
    H2 = 2,
}

impl Protocol {
    pub fn of(session: &ServerSession) -> Protocol {
        if session.is_http2() {
            Protocol::H2
        } else if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            Protocol::Http1Tls
        } else {
            Protocol::Http1
        }
    }

    /// An HTTP/1 connection's protocol, from its stream.
    pub fn of_http1(stream: &Stream) -> Protocol {
        if stream.get_ssl_digest().is_some() {
            Protocol::Http1Tls
        } else {
            Protocol::Http1
        }
    }

    pub fn is_tls(self) -> bool {
        self != Protocol::Http1
    }
}

/// How long connections idle between requests may still send one (see `cleanup`).
const LAST_CALL: Duration = Duration::from_secs(1);

/// What a connection beyond `max_connections` is told before the close.
const OVERLOADED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nRetry-After: 1\r\nConnection: close\r\nCache-Control: no-store\r\n\r\nedge overloaded\n";

/// The listener's app: connection slots and deadlines around the proxy.
pub struct Downstream {
    proxy: Arc<HttpProxy<Edge>>,
    hits: Arc<HitPath>,
    /// Set when a graceful shutdown's last call is over: idle connections end.
    closing: tokio::sync::watch::Sender<bool>,
    slots: Arc<Semaphore>,
    /// Open connections, for the drain at shutdown (the gauge is per process, this per edge).
    open: Arc<AtomicUsize>,
    slot_wait: Duration,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    keepalive_secs: u64,
    body_read_timeout: Duration,
    send_timeout: Duration,
    keepalive_requests: Option<u32>,
    /// The HTTPS listeners; a connection to any other address is plain HTTP/1.1.
    tls: Vec<TlsEndpoint>,
    /// New TLS connections start their handshakes in turn (see `tls::Turns`).
    turns: tls::Turns,
    h2: H2Settings,
}

/// An open client connection, counted in `edge_open_connections` while it holds its slot.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, open: &Arc<AtomicUsize>) -> Self {
        metrics::OPEN_CONNECTIONS.inc();
        open.fetch_add(1, Ordering::SeqCst);
        OpenConnection {
            _slot: slot,
            open: open.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::OPEN_CONNECTIONS.dec();
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Downstream {
    /// `tls`: the HTTPS listeners' certificates, loaded by the caller (see `tls.rs`).
    pub fn new(
        proxy: HttpProxy<Edge>,
        hits: HitPath,
        config: &EdgeConfig,
        tls: Vec<TlsEndpoint>,
    ) -> Self {
        let l = &config.listen;
        Downstream {
            proxy: Arc::new(proxy),
            hits: Arc::new(hits),
            closing: tokio::sync::watch::Sender::new(false),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            open: Arc::new(AtomicUsize::new(0)),
            slot_wait: config.max_connections_wait.get(),
            header_timeout: l.header_read_timeout.get(),
            keepalive_timeout: l.keepalive_timeout.get(),
            // Pingora's own per-read wait between requests, kept as a backstop behind the
            // total deadlines of `Guarded`.
            keepalive_secs: l.keepalive_timeout.get().as_secs().max(1),
            body_read_timeout: l.body_read_timeout.get(),
            send_timeout: l.send_timeout.get(),
            keepalive_requests: (l.keepalive_requests > 0).then_some(l.keepalive_requests),
            tls,
            turns: tls::Turns::new(config.threads),
            h2: H2Settings {
                limits: config.h2.clone(),
                handshake_timeout: l.header_read_timeout.get(),
                idle_timeout: l.keepalive_timeout.get(),
                body_read_timeout: l.body_read_timeout.get(),
                send_timeout: l.send_timeout.get(),
            },
        }
    }

    /// The HTTPS listener a connection came in on, if any: matched by the local address
    /// (a listener on 0.0.0.0 or :: by its port).
    fn tls_endpoint(&self, stream: &Stream) -> Option<&TlsEndpoint> {
        if self.tls.is_empty() {
            return None;
        }
        let digest = stream.get_socket_digest()?;
        let local = *digest.local_addr()?.as_inet()?;
        self.tls.iter().find(|t| {
            t.address == local
                || (t.address.ip().is_unspecified() && t.address.port() == local.port())
        })
    }

    /// The TLS handshake, within the header deadline. `None`: it failed (counted).
    async fn handshake(&self, endpoint: &TlsEndpoint, stream: Stream) -> Option<Stream> {
        // Pingora's listener hands over its own TCP stream; the TLS stream wraps it directly.
        let l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => *l4,
            Err(_) => {
                tracing::warn!("an HTTPS connection without a TCP stream: closed");
                return None;
            }
        };
        // The turn is waited for within the deadline: a flood of new connections queues here
        // no longer than a slow client could take over its handshake.
        let outcome = tokio::time::timeout(self.header_timeout, async {
            self.turns.take().await;
            endpoint.acceptor.tls_handshake(l4).await
        })
        .await;
        let result = match outcome {
            Ok(Ok(tls)) => return Some(Box::new(tls)),
            Ok(Err(e)) => {
                // Scanners, wrong names, old clients: the client's problem, not the edge's.
                tracing::debug!(error = %e, "TLS handshake failed");
                "failed"
            }
            Err(_) => "timeout",
        };
        metrics::TLS_HANDSHAKE_FAILURES
            .with_label_values(&[result])
            .inc();
        None
    }

    /// The count of open client connections, shared.
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    async fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        tokio::time::timeout(self.slot_wait, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    fn configure(&self, session: &mut ServerSession) {
        session.set_keepalive(Some(self.keepalive_secs));
        session.set_read_timeout(Some(self.body_read_timeout));
        session.set_write_timeout(Some(self.send_timeout));
        session.set_pipelining_enabled(true);
    }
}

/// Answers a connection that found no slot: 503, then a short drain of what the client sent
/// so the close does not reset the connection before it read the answer.
async fn refuse(mut stream: Stream) {
    metrics::REJECTED.with_label_values(&["connections"]).inc();
    let answer = async {
        stream.write_all(OVERLOADED_RESPONSE).await?;
        stream.flush().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), answer).await;
}

#[async_trait]
impl ServerApp for Downstream {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(slot) = self.take_slot().await else {
            refuse(stream).await;
            return None;
        };
        let _open = OpenConnection::new(slot, &self.open);
        let stream = match self.tls_endpoint(&stream) {
            Some(endpoint) => self.handshake(endpoint, stream).await?,
            None => stream,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            http2::serve(&self.proxy, &self.hits, &self.h2, stream, shutdown).await;
            return None;
        }
        let mut stream: Stream = Box::new(Guarded::new(stream, self.header_timeout));
        let mut closing = self.closing.subscribe();
        // Bytes read by the fast path and not yet answered (a pipelined next request).
        let mut pending = BytesMut::new();
        // Pingora's state after a session that may hold bytes of the next request (see below).
        let mut carried: Option<HttpPersistentSettings> = None;
        let mut served: u32 = 0;
        loop {
            // Whether Pingora got more than one request header's bytes (or settings that may).
            let mut handed_whole = true;
            let remaining = self.keepalive_requests.map(|n| n.saturating_sub(served));
            let mut session = match carried.take() {
                Some(settings) => {
                    let mut session = ServerSession::new_http1(stream);
                    settings.apply_to_session(&mut session);
                    session
                }
                None => {
                    let keep = !*shutdown.borrow() && remaining != Some(0);
                    match self
                        .hits
                        .next(&mut stream, &mut pending, keep, &mut closing)
                        .await
                    {
                        hit::Next::Close => return None,
                        hit::Next::Served => {
                            served = served.saturating_add(1);
                            if let Some(g) = Guarded::of(&stream) {
                                g.await_next_request(self.keepalive_timeout);
                            }
                            continue;
                        }
                        hit::Next::Proxy { prefix, whole } => {
                            handed_whole = whole;
                            let mut session = ServerSession::new_http1(stream);
                            session.set_pipelined_prefix(prefix);
                            session
                        }
                    }
                }
            };
            session.set_keepalive_reuses_remaining(remaining);
            self.configure(&mut session);
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let before = session
                .stream()
                .and_then(Guarded::of)
                .map(Guarded::delivered);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            served = served.saturating_add(1);
            let (next, settings) = reused.consume();
            // Pingora keeps bytes it read past its request (a pipelined next request) inside
            // `settings`, out of reach. If it was handed one request header and read nothing
            // more from the socket, there are none, and the fast path reads the next request;
            // otherwise (a body, pipelined requests) the next request is Pingora's too, with
            // those settings.
            let guard = Guarded::of(&next);
            let read_more = match (before, guard.map(Guarded::delivered)) {
                (Some(b), Some(a)) => a != b,
                _ => true,
            };
            if handed_whole || read_more {
                carried = settings;
            }
            if let Some(g) = guard {
                g.await_next_request(self.keepalive_timeout);
            }
            stream = next;
        }
    }

    /// The listener has stopped accepting (SIGTERM, or an upgrade's handover). Connections
    /// idle between requests get a last call first: a request arriving within
    /// [`LAST_CALL`] is answered with `Connection: close` (the session's keep-alive is off
    /// once shutdown is signalled), so a client that is sending is told to reconnect rather
    /// than having its connection closed under a request in flight. Then Pingora wakes the
    /// idle readers and those connections close.
    async fn cleanup(&self) {
        tokio::time::sleep(LAST_CALL.min(self.keepalive_timeout)).await;
        self.closing.send_replace(true);
        self.proxy.http_cleanup().await;
    }
}
