//! Waiting until a purge has been applied by every live edge, so that a write answered through
//! one edge is never followed by the old page from another.
//!
//! A publisher that confirms learns its entry's stream id from `XADD` and registers a waiter
//! for it here. While anyone waits, one task reads the readers' reported positions
//! ([`super::readers`]) every [`POLL`] and releases each waiter once every live reader other
//! than the publisher itself has applied its entry. The caller bounds the wait
//! (`invalidation.confirm_timeout`); a reader that stopped reporting stops being waited for
//! after [`super::readers::READER_SILENCE`].

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use super::config::InvalidationConfig;
use super::publisher::connect;
use super::readers::{self, StreamPos};

/// How often the positions are read while a purge waits: a wait costs at most this much
/// beyond the slowest edge's own delay, and Redis sees at most one read per interval.
const POLL: Duration = Duration::from_millis(1);

struct Waiter {
    pos: StreamPos,
    done: oneshot::Sender<()>,
}

/// The waiters of one process; cheap to clone.
#[derive(Clone)]
pub struct Confirmer {
    inner: Arc<Inner>,
}

struct Inner {
    waiting: Mutex<Vec<Waiter>>,
    wake: Notify,
    /// This process: never waited for (it purged its own cache before publishing).
    origin: Arc<str>,
    config: InvalidationConfig,
}

impl Confirmer {
    pub fn new(config: &InvalidationConfig, origin: Arc<str>) -> Confirmer {
        Confirmer {
            inner: Arc::new(Inner {
                waiting: Mutex::new(Vec::new()),
                wake: Notify::new(),
                origin,
                config: config.clone(),
            }),
        }
    }

    /// Resolves once every live reader but this process has applied the entry at `pos`.
    /// Never resolves while Redis cannot be read: callers bound it with a timeout.
    pub async fn applied(&self, pos: StreamPos) {
        let (done, rx) = oneshot::channel();
        self.inner.waiting.lock().push(Waiter { pos, done });
        self.inner.wake.notify_one();
        let _ = rx.await;
    }

    /// Reads positions while anyone waits and releases the waiters they satisfy; runs until
    /// the process ends.
    pub async fn run(self) {
        let inner = &self.inner;
        let mut conn = None;
        let mut failures = 0u32;
        loop {
            let idle = {
                let mut w = inner.waiting.lock();
                // Waiters whose caller gave up (timed out) go.
                w.retain(|x| !x.done.is_closed());
                w.is_empty()
            };
            if idle {
                inner.wake.notified().await;
                continue;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match connect(&inner.config, None).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        // The publisher logs and counts Redis being away; waiters time out.
                        tokio::time::sleep(inner.config.backoff(failures)).await;
                        failures = failures.saturating_add(1);
                        continue;
                    }
                },
            };
            match readers::positions(c, &inner.config.stream).await {
                Ok(live) => {
                    failures = 0;
                    let slowest = live
                        .iter()
                        .filter(|(origin, _)| origin.as_str() != &*inner.origin)
                        .map(|(_, p)| *p)
                        .min();
                    release(&mut inner.waiting.lock(), slowest);
                }
                Err(_) => {
                    conn = None;
                    continue;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Releases every waiter whose entry the slowest live reader has applied (all of them when
/// no other reader is live: nobody else can serve a stale page).
fn release(waiting: &mut Vec<Waiter>, slowest: Option<StreamPos>) {
    let mut i = 0;
    while i < waiting.len() {
        if slowest.is_none_or(|s| s >= waiting[i].pos) {
            let w = waiting.swap_remove(i);
            let _ = w.done.send(());
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(ms: u64) -> (Waiter, oneshot::Receiver<()>) {
        let (done, rx) = oneshot::channel();
        (
            Waiter {
                pos: StreamPos { ms, seq: 0 },
                done,
            },
            rx,
        )
    }

    #[test]
    fn only_entries_the_slowest_reader_applied_are_released() {
        let (a, mut ra) = waiter(5);
        let (b, mut rb) = waiter(9);
        let mut w = vec![a, b];
        release(&mut w, Some(StreamPos { ms: 7, seq: 0 }));
        assert!(ra.try_recv().is_ok());
        assert!(rb.try_recv().is_err());
        assert_eq!(w.len(), 1);
        release(&mut w, None);
        assert!(rb.try_recv().is_ok());
        assert!(w.is_empty());
    }
}
