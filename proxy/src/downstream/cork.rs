//! One socket write per round of an HTTP/2 connection, not one per response.
//!
//! The h2 codec flushes its output whenever it queues a DATA frame too large to copy into its
//! buffer (over 256 bytes: every page), and again at the end of each poll of the connection.
//! Over TLS each flush is a `sendmsg` of its own: ten streams answered together cost ten
//! system calls, and on a loopback or a busy NIC the send path is the most expensive thing
//! the edge does per response. NGINX writes all the frames it has ready in one go.
//!
//! [`Corked`] wraps the connection's socket (below the codec, above TLS and the socket's
//! write buffer) and, while the serving loop polls the connection ([`Cork::poll`]), turns
//! the codec's flushes into no-ops: the bytes stay in the TLS layer's records and the
//! socket's write buffer (`listen.write_buffer`, which writes through when full). A round
//! lasts until the connection has nothing more to hand over (the loop accepts the streams
//! that came in together one poll at a time, answering fresh hits as it goes); the first
//! deferred flush wakes the connection's task, and the first flush of the next round writes
//! everything at once. Outside [`Cork::poll`] (the handshake, the final GOAWAY) and at
//! shutdown every flush is real.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};

use pingora_core::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The serving loop's side: whether a poll of the connection is running, and which round it
/// belongs to. A round is the polls from a wake-up until the connection has nothing more to
/// give (its future returns `Pending`): a burst of streams accepted one poll at a time is one
/// round, so their answers leave together.
#[derive(Clone)]
pub(super) struct Cork(Arc<Rounds>);

struct Rounds {
    round: AtomicU32,
    in_poll: AtomicBool,
    /// The last poll returned `Pending`: the next one starts a new round.
    ended: AtomicBool,
}

impl Default for Cork {
    fn default() -> Self {
        Cork(Arc::new(Rounds {
            round: AtomicU32::new(0),
            in_poll: AtomicBool::new(false),
            ended: AtomicBool::new(true),
        }))
    }
}

impl Cork {
    /// Polls `fut` (which drives the connection) with its flushes corked.
    pub async fn poll<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let r = &self.0;
            if r.ended.load(Ordering::Relaxed) {
                r.round.fetch_add(1, Ordering::Relaxed);
            }
            r.in_poll.store(true, Ordering::Relaxed);
            let out = fut.as_mut().poll(cx);
            r.in_poll.store(false, Ordering::Relaxed);
            r.ended.store(out.is_pending(), Ordering::Relaxed);
            out
        })
        .await
    }

    /// Wraps the connection's socket.
    pub fn stream(&self, inner: Stream) -> Stream {
        Box::new(Corked {
            inner,
            cork: self.clone(),
            dirty: false,
            deferred: None,
        })
    }
}

/// A socket whose flushes are deferred inside [`Cork::poll`] (see the module docs).
pub(super) struct Corked {
    inner: Stream,
    cork: Cork,
    /// Bytes written since the last real flush.
    dirty: bool,
    /// The round in which a flush was deferred, if one is pending.
    deferred: Option<u32>,
}

impl fmt::Debug for Corked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Corked")
            .field("inner", &self.inner)
            .field("deferred", &self.deferred)
            .finish()
    }
}

impl Corked {
    /// Notes a write's outcome: bytes written give the next flush something to send.
    fn wrote(&mut self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        self.dirty |= matches!(r, Poll::Ready(Ok(n)) if n > 0);
        r
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let now = this.cork.0.round.load(Ordering::Relaxed);
        let corked = this.dirty && this.cork.0.in_poll.load(Ordering::Relaxed);
        match this.deferred {
            // Already deferred in this round: the wake-up is on its way.
            Some(at) if corked && at == now => return Poll::Ready(Ok(())),
            // Nothing pending yet in a corked poll: defer, and come back next round.
            None if corked => {
                this.deferred = Some(now);
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            // Outside the loop's polls, or the round after a deferral: write it all.
            _ => {}
        }
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        if r.is_ready() {
            this.deferred = None;
            this.dirty = false;
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dirty {
            std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            this.deferred = None;
            this.dirty = false;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

super::delegate::delegate_stream_traits!(Corked);

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use async_trait::async_trait;
    use pingora_core::protocols::raw_connect::ProxyDigest;
    use pingora_core::protocols::{
        GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
        TimingDigest, UniqueID, UniqueIDType,
    };

    use super::*;

    /// A socket stand-in that counts the flushes that had bytes to send (each one a system
    /// call on a real socket with a write buffer) and the bytes sent by them.
    #[derive(Debug, Default)]
    struct Socket {
        pending: usize,
        sends: Arc<AtomicUsize>,
        sent: Arc<AtomicUsize>,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().pending += buf.len();
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.pending > 0 {
                this.sends.fetch_add(1, Ordering::SeqCst);
                this.sent.fetch_add(this.pending, Ordering::SeqCst);
                this.pending = 0;
            }
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            assert_eq!(self.pending, 0, "shut down with unsent bytes");
            self.poll_flush(cx)
        }
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[async_trait]
    impl Shutdown for Socket {
        async fn shutdown(&mut self) {}
    }
    impl UniqueID for Socket {
        fn id(&self) -> UniqueIDType {
            0
        }
    }
    impl Ssl for Socket {}
    impl GetTimingDigest for Socket {
        fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
            vec![]
        }
    }
    impl GetProxyDigest for Socket {
        fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
            None
        }
    }
    impl GetSocketDigest for Socket {
        fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
            None
        }
    }
    #[async_trait]
    impl Peek for Socket {}

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Frames written and flushed one by one, as the h2 codec does with pages.
    fn frames(s: &mut Stream, cx: &mut Context<'_>, n: usize) {
        for _ in 0..n {
            assert!(Pin::new(&mut *s).poll_write(cx, &[0; 100]).is_ready());
            assert!(Pin::new(&mut *s).poll_flush(cx).is_ready());
        }
    }

    /// One poll of the serving loop (through [`Cork::poll`]) that writes `n` frames; `more`:
    /// the connection had another stream to hand over (the poll is `Ready`, the round goes on).
    fn poll(cork: &Cork, s: &mut Stream, cx: &mut Context<'_>, n: usize, more: bool) {
        let fut = cork.poll(std::future::poll_fn(|cx| {
            frames(s, cx, n);
            if more { Poll::Ready(()) } else { Poll::Pending }
        }));
        assert_eq!(std::pin::pin!(fut).poll(cx).is_ready(), more);
    }

    /// A round of one poll: the connection then has nothing more to give.
    fn round(cork: &Cork, s: &mut Stream, cx: &mut Context<'_>, n: usize) {
        poll(cork, s, cx, n, false);
    }

    /// A corked stream over a [`Socket`], with its counters and a waker that counts.
    struct Rig {
        cork: Cork,
        s: Stream,
        sends: Arc<AtomicUsize>,
        sent: Arc<AtomicUsize>,
        wakes: Arc<Wakes>,
    }

    impl Rig {
        fn new() -> Rig {
            let (sends, sent) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
            let cork = Cork::default();
            let s = cork.stream(Box::new(Socket {
                pending: 0,
                sends: Arc::clone(&sends),
                sent: Arc::clone(&sent),
            }));
            Rig {
                cork,
                s,
                sends,
                sent,
                wakes: Arc::default(),
            }
        }

        /// (sends, bytes sent, wake-ups asked for).
        fn counts(&self) -> (usize, usize, usize) {
            let n = |c: &AtomicUsize| c.load(Ordering::SeqCst);
            (n(&self.sends), n(&self.sent), n(&self.wakes.0))
        }

        /// Runs `f` with the stream and a context whose waker counts.
        fn with<T>(&mut self, f: impl FnOnce(&Cork, &mut Stream, &mut Context<'_>) -> T) -> T {
            let waker = Waker::from(self.wakes.clone());
            f(&self.cork, &mut self.s, &mut Context::from_waker(&waker))
        }

        /// A round that only flushes (the codec's end of a poll with nothing new to write).
        fn flush_round(&mut self) {
            self.with(|cork, s, cx| {
                let fut = cork.poll(std::future::poll_fn(|cx| {
                    assert!(Pin::new(&mut *s).poll_flush(cx).is_ready());
                    Poll::<()>::Pending
                }));
                assert!(std::pin::pin!(fut).poll(cx).is_pending());
            });
        }
    }

    #[test]
    fn flushes_inside_a_round_become_one_send_in_the_next() {
        let mut rig = Rig::new();

        // Outside the loop's polls (the handshake), every flush sends.
        rig.with(|_, s, cx| frames(s, cx, 2));
        assert_eq!(rig.counts().0, 2);

        // Ten responses in one round: nothing sent yet, one wake-up asked for.
        rig.with(|cork, s, cx| round(cork, s, cx, 10));
        assert_eq!((rig.counts().0, rig.counts().2), (2, 1));

        // The next round's first flush sends all ten (and the frame before it); what that
        // round writes after it waits for the round after.
        rig.with(|cork, s, cx| round(cork, s, cx, 3));
        assert_eq!(rig.counts().0, 3);
        assert_eq!(rig.counts().1, 200 + 1_100);
        assert_eq!(rig.counts().2, 2);

        // A round that only flushes (the codec's end of poll) sends the rest.
        rig.flush_round();
        assert_eq!((rig.counts().0, rig.counts().1), (4, 1_500));
        // Nothing left: a round without writes asks for no further wake-up.
        assert_eq!(rig.counts().2, 2);
    }

    /// Streams accepted one poll at a time (each poll `Ready`) are one round: their answers
    /// wait until the connection has nothing more to hand over, then leave in one send.
    #[test]
    fn a_burst_of_accepted_streams_is_answered_in_one_send() {
        let mut rig = Rig::new();
        rig.with(|cork, s, cx| {
            for _ in 0..9 {
                poll(cork, s, cx, 1, true);
            }
            poll(cork, s, cx, 1, false);
        });
        assert_eq!(rig.counts().0, 0, "sent before the round ended");
        rig.flush_round();
        assert_eq!((rig.counts().0, rig.counts().1), (1, 1_000));
    }

    #[test]
    fn a_deferred_flush_is_sent_before_shutdown() {
        let mut rig = Rig::new();
        rig.with(|cork, s, cx| round(cork, s, cx, 4));
        assert_eq!(rig.counts().0, 0);
        // The GOAWAY path: the codec shuts the socket down outside the loop's polls.
        rig.with(|_, s, cx| assert!(Pin::new(s).poll_shutdown(cx).is_ready()));
        assert_eq!(rig.counts().1, 400);
    }
}
