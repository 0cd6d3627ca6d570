//! The two read deadlines of a connection, given to hyper as its timer:
//!
//! - **header read**: a request head must be complete within `server.header_read_timeout` of
//!   its first byte (of the connection's start, for the first request). hyper's
//!   `header_read_timeout` closes a connection that misses it, so a client trickling a header
//!   byte by byte (slowloris) cannot hold a connection open.
//! - **keep-alive idle**: between requests a connection may stay silent for
//!   `server.keepalive_timeout`, then it is closed.
//!
//! hyper has only the first, and starts it the moment a connection goes idle, so on its own the
//! idle time allowed between requests would be the header deadline. [`HeadTimer`] therefore
//! stretches each head deadline after the first: while no byte of the next request has arrived
//! the deadline is the idle one, and from the first byte on it is that byte's time plus the
//! header deadline. Bytes are seen by [`TrackedIo`], which counts reads.
//!
//! This relies on hyper (1.x, HTTP/1 server) asking its timer for a sleep only to time request
//! heads: once per head, when it starts waiting for one. The server tests hold both deadlines.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads that returned bytes, counted for the connection's [`HeadTimer`].
#[derive(Debug, Default)]
pub(super) struct ReadActivity {
    reads: AtomicU64,
}

impl ReadActivity {
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Acquire)
    }
}

/// A connection's socket, counting the reads that returned bytes.
pub(super) struct TrackedIo<T> {
    inner: T,
    activity: Arc<ReadActivity>,
}

impl<T> TrackedIo<T> {
    pub(super) fn new(inner: T, activity: Arc<ReadActivity>) -> Self {
        TrackedIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Release);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection: the first head gets the plain header deadline, every later
/// one the idle deadline until its first byte arrives (see the module docs).
pub(super) struct HeadTimer {
    tokio: TokioTimer,
    activity: Arc<ReadActivity>,
    header: Duration,
    idle: Duration,
    heads: AtomicU64,
}

impl HeadTimer {
    pub(super) fn new(activity: Arc<ReadActivity>, header: Duration, idle: Duration) -> Self {
        HeadTimer {
            tokio: TokioTimer::new(),
            activity,
            header,
            idle,
            heads: AtomicU64::new(0),
        }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.tokio.sleep(duration)
    }

    /// hyper asks for `now + header_read_timeout` when it starts waiting for a head.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        if self.heads.fetch_add(1, Ordering::Relaxed) == 0 {
            return self.tokio.sleep_until(deadline);
        }
        let start = deadline
            .checked_sub(self.header)
            .unwrap_or_else(|| self.now());
        Box::pin(NextHead {
            activity: self.activity.clone(),
            reads_at_start: self.activity.reads(),
            header: self.header,
            first_byte_seen: false,
            sleep: Box::pin(tokio::time::sleep_until((start + self.idle).into())),
        })
    }

    fn now(&self) -> Instant {
        self.tokio.now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

/// The deadline of a head after the first: idle until a byte arrives, then header.
struct NextHead {
    activity: Arc<ReadActivity>,
    reads_at_start: u64,
    header: Duration,
    first_byte_seen: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for NextHead {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this right after each read of the head that left it incomplete, so the
        // first poll that sees new reads is (within one poll) when the first byte came.
        if !self.first_byte_seen && self.activity.reads() != self.reads_at_start {
            self.first_byte_seen = true;
            let deadline = tokio::time::Instant::now() + self.header;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for NextHead {}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(activity: &Arc<ReadActivity>) -> HeadTimer {
        HeadTimer::new(
            activity.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
    }

    /// Whether a sleep has fired, polled once.
    fn fired(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        sleep
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_has_the_header_deadline_from_the_start() {
        let activity = Arc::new(ReadActivity::default());
        let t = timer(&activity);
        let mut first = t.sleep_until(t.now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(9_990)).await;
        assert!(!fired(&mut first));
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(fired(&mut first));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_head_may_idle_for_the_keepalive_time() {
        let activity = Arc::new(ReadActivity::default());
        let t = timer(&activity);
        let _first = t.sleep_until(t.now() + Duration::from_secs(10));
        let mut next = t.sleep_until(t.now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!fired(&mut next), "idle, within keep-alive");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(fired(&mut next), "idle past keep-alive");
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_head_has_the_header_deadline_from_its_first_byte() {
        let activity = Arc::new(ReadActivity::default());
        let t = timer(&activity);
        let _first = t.sleep_until(t.now() + Duration::from_secs(10));
        let mut next = t.sleep_until(t.now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.reads.fetch_add(1, Ordering::Release);
        assert!(
            !fired(&mut next),
            "the first byte starts the header deadline"
        );
        tokio::time::advance(Duration::from_millis(9_990)).await;
        assert!(!fired(&mut next));
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(fired(&mut next), "header deadline after the first byte");
    }
}
