//! A client connection with the deadlines Pingora's HTTP/1 reader lacks. Pingora times each
//! read of a request header separately, so a client sending one byte every few seconds is
//! never closed. [`Guarded`] wraps the accepted socket and enforces, around every read:
//!
//! - **idle**: between requests (and before the first one), the next request's first byte
//!   must come within `keepalive_timeout` (the first request: `header_read_timeout` from the
//!   accept), else the connection ends quietly;
//! - **header**: from its first byte, the whole request header must arrive within
//!   `header_read_timeout`, else the client gets a 408 and the connection is closed;
//! - **done**: once the edge has the header (marked by the proxy's first hook through
//!   [`Guarded::header_received`]), reads pass straight through; the body and the response
//!   have Pingora's per-read and per-write timeouts.
//!
//! The phase lives in atomics so the hook can mark it through the shared `&Stream` Pingora
//! hands out; the timer is re-armed inside `poll_read` when the deadline changed.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pingora_core::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics;

const IDLE: u8 = 0;
const HEADER: u8 = 1;
const DONE: u8 = 2;

/// What a client whose header did not arrive in time is told before the close.
const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 24\r\nConnection: close\r\nCache-Control: no-store\r\n\r\nrequest header too slow\n";

/// The error a read returns when the header deadline passes; the log bridge recognises
/// Pingora's report of it as client behaviour, not an edge error.
pub const HEADER_TIMEOUT_MESSAGE: &str = "request header not received in time";

/// A client connection with header and idle deadlines (see the module docs).
pub struct Guarded {
    inner: Stream,
    phase: AtomicU8,
    /// Milliseconds after `epoch` when the current phase times out.
    deadline_ms: AtomicU64,
    epoch: Instant,
    header_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// The `deadline_ms` the timer is set to.
    armed_ms: u64,
    /// Bytes the connection has delivered, so the downstream loop can tell whether Pingora
    /// read past what it was handed (see `Downstream::process_new`).
    delivered: AtomicU64,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("phase", &self.phase.load(Ordering::Relaxed))
            .finish()
    }
}

impl Guarded {
    /// A freshly accepted connection: its first header must be complete within
    /// `header_timeout` of now.
    pub fn new(inner: Stream, header_timeout: Duration) -> Self {
        let epoch = Instant::now();
        let ms = header_timeout.as_millis() as u64;
        Guarded {
            inner,
            phase: AtomicU8::new(HEADER),
            deadline_ms: AtomicU64::new(ms),
            epoch,
            header_timeout,
            timer: Box::pin(tokio::time::sleep_until((epoch + header_timeout).into())),
            armed_ms: ms,
            delivered: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The request header is in: no deadline until the next request.
    pub fn header_received(&self) {
        self.phase.store(DONE, Ordering::Relaxed);
    }

    /// The response is sent and the connection is kept: the next request's first byte must
    /// come within `keepalive`.
    pub fn await_next_request(&self, keepalive: Duration) {
        self.deadline_ms.store(
            self.now_ms() + keepalive.as_millis() as u64,
            Ordering::Relaxed,
        );
        self.phase.store(IDLE, Ordering::Relaxed);
    }

    /// Bytes read from the client so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The guard around a Pingora stream, when it is one.
    pub fn of(stream: &Stream) -> Option<&Guarded> {
        stream.as_any().downcast_ref::<Guarded>()
    }

    /// Sets the timer to the current deadline if that changed since it was armed.
    fn rearm(&mut self) {
        let want = self.deadline_ms.load(Ordering::Relaxed);
        if want != self.armed_ms {
            self.armed_ms = want;
            self.timer
                .as_mut()
                .reset((self.epoch + Duration::from_millis(want)).into());
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.load(Ordering::Relaxed);
        let before = buf.filled().len();
        if phase == DONE {
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            let n = (buf.filled().len() - before) as u64;
            this.delivered.fetch_add(n, Ordering::Relaxed);
            return r;
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                this.delivered.fetch_add(n, Ordering::Relaxed);
                if phase == IDLE && buf.filled().len() > before {
                    // The next request started: its header now has `header_timeout`.
                    let ms = this.now_ms() + this.header_timeout.as_millis() as u64;
                    this.deadline_ms.store(ms, Ordering::Relaxed);
                    this.phase.store(HEADER, Ordering::Relaxed);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Pending => {}
            ready_err => return ready_err,
        }
        this.rearm();
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if phase == IDLE {
            // Nothing of a next request: end quietly, as an idle keep-alive close.
            metrics::DOWNSTREAM_TIMEOUTS
                .with_label_values(&["keepalive"])
                .inc();
            return Poll::Ready(Ok(()));
        }
        metrics::DOWNSTREAM_TIMEOUTS
            .with_label_values(&["header"])
            .inc();
        // Best effort: a socket whose send buffer is empty takes this at once; if not, the
        // close alone tells the client.
        let _ = Pin::new(&mut this.inner).poll_write(cx, TIMEOUT_RESPONSE);
        let _ = Pin::new(&mut this.inner).poll_flush(cx);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            HEADER_TIMEOUT_MESSAGE,
        )))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

super::delegate::delegate_stream_traits!(Guarded);
