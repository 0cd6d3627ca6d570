//! The accept loop of a listener: HTTP/1.1 connections served by hyper with read deadlines
//! ([`super::deadlines`]) and a cap on open connections, drained on shutdown.
//!
//! - **Cap.** Each open connection holds one of `server.max_connections` permits. A connection
//!   accepted beyond the cap waits up to [`OVERLOAD_WAIT`] for one to come free (absorbing the
//!   churn of one connection closing as another opens), then is answered `503` with
//!   `Retry-After: 1` and `Connection: close` and closed, without reading its request. The
//!   listener keeps accepting rather than stopping: a client left in the kernel's backlog
//!   hangs until its own connect timeout, a 503 tells it at once (and the edge tries another
//!   API process). Refusals are counted in `reviews_api_connections_refused_total`.
//! - **HTTP/1.1 only.** The edge and the front ends speak HTTP/1.1 to the API; serving
//!   HTTP/2 as well would mean sniffing the first bytes before any deadline applies.
//! - **Shutdown.** Accepting stops, every connection is told to finish its in-flight request
//!   and close (idle ones close at once), and the loop returns when all permits are back.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::deadlines::{HeadTimer, ReadActivity, TrackedIo};
use crate::metrics::ConnectionMetrics;

/// How long a connection beyond the cap waits for a free slot before it is refused.
pub const OVERLOAD_WAIT: Duration = Duration::from_millis(100);
/// Bounds on the refusal itself, so refused connections cannot pile up either.
const REFUSAL_WRITE_WAIT: Duration = Duration::from_secs(1);
const REFUSAL_DRAIN_WAIT: Duration = Duration::from_secs(1);
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

const REFUSAL_BODY: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"too many open connections; retry shortly"}"#;

/// The per-connection limits of a listener (`server.*` in the config).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: u32,
}

/// Serves `app` on `listener` until `stopped` turns true, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    mut stopped: watch::Receiver<bool>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        tokio::spawn(connection(
            stream,
            app.clone(),
            permits.clone(),
            limits,
            metrics.clone(),
            stopped.clone(),
        ));
    }
    drop(listener);
    // A connection gives its permit back when it ends: holding them all means all have ended.
    let _ = permits.acquire_many(limits.max_connections).await;
    Ok(())
}

/// An accept that failed. The peer's own trouble (reset before accept) is skipped; running out
/// of file descriptors or buffers is logged and waited out briefly rather than spun on.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing before the next accept");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connection(
    stream: TcpStream,
    app: axum::Router,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    mut stopped: watch::Receiver<bool>,
) {
    let permit = match permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => match tokio::time::timeout(OVERLOAD_WAIT, permits.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                metrics.refused.inc();
                refuse(stream).await;
                return;
            }
        },
    };
    metrics.open.inc();
    // Responses are written whole; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(ReadActivity::default());
    let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(HeadTimer::new(
            activity,
            limits.header_read_timeout,
            limits.keepalive_timeout,
        ))
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    // The watch guard `wait_for` returns must not live across the drain below.
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Deadlines missed, clients gone mid-request, malformed heads: the client's trouble.
        tracing::debug!(error = %e, "connection closed with an error");
    }
    metrics.open.dec();
    drop(permit);
}

/// Answers 503 without reading the request, then closes. What the client already sent is
/// drained (briefly) before the close: closing a socket with unread input makes the kernel send
/// a reset, which can destroy the answer before the client reads it.
async fn refuse(mut stream: TcpStream) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         cache-control: no-store\r\nretry-after: 1\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    if !matches!(
        tokio::time::timeout(REFUSAL_WRITE_WAIT, write).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = REFUSAL_DRAIN_BYTES;
        loop {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 && n < left => left -= n,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_DRAIN_WAIT, drain).await;
}
