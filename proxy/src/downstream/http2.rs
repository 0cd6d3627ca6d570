//! HTTP/2 client connections (TLS with ALPN `h2`): the handshake with the `[h2]` limits, then
//! one proxy session per stream, as Pingora's own HTTP app runs them, plus what that loop
//! lacks against streams that cost the edge work after the client is done with them:
//!
//! - **in-flight cap**: the h2 codec frees a stream's concurrency slot as soon as the client
//!   resets it, while the edge may still be fetching its answer ("rapid reset",
//!   CVE-2023-44487). The edge counts the requests it is still handling per connection and
//!   refuses (`RST_STREAM REFUSED_STREAM`) a new stream while `max_concurrent_streams` of them
//!   are in progress;
//! - **reset budget**: every refusal, every stream Pingora rejects as malformed and every
//!   request the client abandoned (reset) before its response was complete counts; at
//!   `h2.max_resets` the connection gets `GOAWAY ENHANCE_YOUR_CALM` and is closed. Pingora
//!   stops work on a stream once the client resets it, so without this a client could open and
//!   reset streams for ever, each one starting a cache lookup or a backend request. The codec
//!   enforces the same number for streams reset before they were accepted and for resets it
//!   sends on client errors (CVE-2025-8671);
//! - **requests per connection**: after `h2.max_requests`, a graceful GOAWAY;
//! - **idle**: no stream in progress for `listen.keepalive_timeout` closes the connection.
//!
//! The connection holds its `max_connections` slot for its whole life (the caller's), and
//! writes its frames through [`Cork`]: one socket write per round, not one per response.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::http::v2::server::{
    self as h2server, H2Accept, H2Options, HttpSession,
};
use pingora_core::protocols::{Digest, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::sync::Notify;

use super::cork::Cork;
use super::hit::{H2Served, HitPath};
use crate::config::H2Config;
use crate::metrics;
use crate::proxy::Edge;

type Connection = h2::server::Connection<Stream, Bytes>;

/// The `[h2]` limits and the timeouts an HTTP/2 connection runs with.
#[derive(Clone)]
pub(super) struct H2Settings {
    pub limits: H2Config,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub send_timeout: Duration,
}

impl H2Settings {
    fn options(&self) -> H2Options {
        let l = &self.limits;
        let mut o = H2Options::new();
        o.max_concurrent_streams(l.max_concurrent_streams)
            .max_header_list_size(l.max_header_list_size.bytes() as u32)
            .max_pending_accept_reset_streams(l.max_resets as usize)
            .max_local_error_reset_streams(Some(l.max_resets as usize));
        o
    }
}

tokio::task_local! {
    /// Set by the proxy's `logging` hook when the request it ends was abandoned by the client
    /// (see [`request_aborted`]); only HTTP/2 streams run inside this scope.
    static ABORTED: Cell<bool>;
}

/// Called for every request that ended with an error on the client's side: an HTTP/2
/// stream's connection counts it against `h2.max_resets`. No-op for HTTP/1.
pub fn request_aborted() {
    let _ = ABORTED.try_with(|a| a.set(true));
}

/// Requests of one connection still being handled, and those the client abandoned.
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
    aborted: AtomicU32,
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_one();
        }
    }
}

impl InFlight {
    fn start(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    async fn idle_for(&self, d: Duration) {
        loop {
            while self.count.load(Ordering::SeqCst) != 0 {
                self.idle.notified().await;
            }
            tokio::time::sleep(d).await;
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }
}

/// Serves one HTTP/2 connection until it closes: fresh hits from the cache directly
/// ([`HitPath::serve_h2`]), everything else through the proxy.
pub(super) async fn serve(
    proxy: &Arc<HttpProxy<Edge>>,
    hits: &Arc<HitPath>,
    settings: &H2Settings,
    stream: Stream,
    shutdown: &ShutdownWatch,
) {
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let cork = Cork::default();
    let handshake = h2server::handshake(cork.stream(stream), Some(settings.options()));
    let mut conn = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "h2 handshake failed");
            return;
        }
        Err(_) => {
            metrics::DOWNSTREAM_TIMEOUTS
                .with_label_values(&["header"])
                .inc();
            return;
        }
    };
    let limits = &settings.limits;
    let max_in_flight = limits.max_concurrent_streams as usize;
    let in_flight = Arc::new(InFlight {
        count: AtomicUsize::new(0),
        idle: Notify::new(),
        aborted: AtomicU32::new(0),
    });
    let mut shutdown_rx = shutdown.clone();
    let mut draining = *shutdown.borrow();
    if draining {
        conn.graceful_shutdown();
    }
    let (mut resets, mut requests) = (0u32, 0u32);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown_rx.changed(), if !draining => {
                conn.graceful_shutdown();
                draining = true;
                continue;
            }
            a = cork.poll(HttpSession::from_h2_conn(&mut conn, digest.clone())) => a,
            _ = in_flight.idle_for(settings.idle_timeout), if !draining => {
                metrics::DOWNSTREAM_TIMEOUTS.with_label_values(&["keepalive"]).inc();
                return;
            }
        };
        let session = match accepted {
            // The client went away or broke the protocol (the codec has sent its GOAWAY).
            Err(e) => {
                if codec_calmed_down(&e) {
                    metrics::H2_CLOSED_FOR_RESETS.inc();
                }
                tracing::debug!(error = %e, "h2 connection ended");
                return;
            }
            Ok(None) => return,
            Ok(Some(H2Accept::Rejected)) => {
                resets += 1;
                if resets >= limits.max_resets {
                    return calm_down(conn).await;
                }
                continue;
            }
            Ok(Some(H2Accept::Session(s))) => s,
        };
        if resets + in_flight.aborted.load(Ordering::SeqCst) >= limits.max_resets {
            drop(session);
            return calm_down(conn).await;
        }
        if in_flight.count.load(Ordering::SeqCst) >= max_in_flight {
            let mut session = session;
            session.shutdown_with_reason(h2::Reason::REFUSED_STREAM);
            metrics::H2_REFUSED.inc();
            resets += 1;
            if resets >= limits.max_resets {
                return calm_down(conn).await;
            }
            continue;
        }
        requests += 1;
        if limits.max_requests != 0 && requests >= limits.max_requests && !draining {
            conn.graceful_shutdown();
            draining = true;
        }
        let (guard, counts) = (in_flight.start(), in_flight.clone());
        let (proxy, hits, shutdown) = (proxy.clone(), hits.clone(), shutdown.clone());
        let (read_timeout, write_timeout) = (settings.body_read_timeout, settings.send_timeout);
        start_stream(Box::pin(async move {
            let _guard = guard;
            let mut session = session;
            session.set_write_timeout(Some(write_timeout));
            match hits.serve_h2(&mut session).await {
                H2Served::Hit => return,
                H2Served::Failed => {
                    counts.aborted.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                H2Served::NotFresh => {}
            }
            let mut session = ServerSession::new_http2(session);
            session.set_read_timeout(Some(read_timeout));
            session.set_write_timeout(Some(write_timeout));
            let aborted = ABORTED
                .scope(Cell::new(false), async move {
                    proxy.process_new_http(session, &shutdown).await;
                    ABORTED.with(Cell::get)
                })
                .await;
            if aborted {
                counts.aborted.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
}

/// Runs a stream's work on the connection's task as far as it goes without waiting, and
/// spawns the rest. A fresh hit finishes in that first poll: its frames are queued before
/// the connection's next write, and it costs no task of its own. With a task per stream
/// every hit waited a scheduler round before it was answered (h2 hits: 1.15–1.3× the
/// throughput without one, p99 36–40 ms against 53–55 at 640 streams in flight;
/// proxy/README.md, Measured over TLS).
///
/// A panic in that first poll ends only the stream, as it would in a task of its own (Tokio
/// catches a task's panic), not the connection and its other streams.
fn start_stream(mut work: Pin<Box<dyn Future<Output = ()> + Send>>) {
    let mut cx = Context::from_waker(Waker::noop());
    let first =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.as_mut().poll(&mut cx)));
    match first {
        // The spawned task polls it again with its own waker.
        Ok(std::task::Poll::Pending) => drop(tokio::spawn(work)),
        Ok(std::task::Poll::Ready(())) => {}
        Err(_) => tracing::error!("an h2 stream's handler panicked; the stream was dropped"),
    }
}

/// Whether the codec closed the connection for too many resets (its own budget).
fn codec_calmed_down(e: &pingora_error::Error) -> bool {
    e.root_cause()
        .downcast_ref::<::h2::Error>()
        .is_some_and(|h| h.reason() == Some(::h2::Reason::ENHANCE_YOUR_CALM))
}

/// Ends a connection past its reset budget: `GOAWAY ENHANCE_YOUR_CALM`, flushed for at most a
/// second, then the socket is dropped.
async fn calm_down(mut conn: Connection) {
    metrics::H2_CLOSED_FOR_RESETS.inc();
    conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
    let flush = std::future::poll_fn(|cx| conn.poll_closed(cx));
    let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
}
