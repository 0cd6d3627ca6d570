//! The queue of requests waiting for an in-flight slot when every candidate backend is at its
//! `max_in_flight`: FIFO, bounded by `upstream.queue_size`, each wait bounded by a deadline.
//!
//! A slot given back is handed to the first waiter that may use it (one that has not tried
//! that backend), so no waiter sleeps while a slot it could use is free. The protocol avoids a
//! lost wake-up without locking on the release path when nobody waits: a waiter counts itself
//! in `waiting` (under the lock) *before* its last look for a free slot, and a release gives
//! its slot back *before* it reads `waiting`; with both in one sequentially consistent order,
//! either the waiter's look sees the free slot or the release sees the waiter and dispatches.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{Balancer, InFlight, Unavailable};
use crate::metrics;

struct Waiter {
    id: u64,
    tried: Vec<usize>,
    tx: oneshot::Sender<InFlight>,
}

pub(super) struct Queue {
    waiters: Mutex<VecDeque<Waiter>>,
    /// `waiters.len()`, readable without the lock.
    pub(super) waiting: AtomicUsize,
    capacity: usize,
    next_id: AtomicU64,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Self {
        Queue {
            waiters: Mutex::new(VecDeque::new()),
            waiting: AtomicUsize::new(0),
            capacity,
            next_id: AtomicU64::new(0),
        }
    }

    fn set_gauge(&self, len: usize) {
        self.waiting.store(len, Ordering::SeqCst);
        metrics::UPSTREAM_QUEUE_LENGTH.set(len as i64);
    }

    /// Called after a slot was given back: hands free slots to waiters, first come first.
    pub(super) fn slot_freed(&self, balancer: &Arc<Balancer>) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        // Slots handed to a waiter that has just given up are dropped after the lock is
        // released: dropping one dispatches again.
        let mut unsent = Vec::new();
        {
            let mut waiters = self.waiters.lock();
            let mut i = 0;
            // Once every backend is at its limit no waiter can be served: stop there. Looking
            // on through the whole queue cost O(queue) `take`s (each reading the clock) per
            // freed slot; with hundreds waiting at a cold start that was a quarter of the
            // edge's CPU, spent while holding the lock.
            while i < waiters.len() && balancer.has_free_slot() {
                if waiters[i].tx.is_closed() {
                    waiters.remove(i);
                    continue;
                }
                match balancer.take(&waiters[i].tried) {
                    Some(b) => {
                        let w = waiters.remove(i).expect("index in range");
                        if let Err(slot) = w.tx.send(InFlight::new(b, balancer.clone())) {
                            unsent.push(slot);
                        }
                    }
                    None => i += 1,
                }
            }
            self.set_gauge(waiters.len());
        }
        drop(unsent);
    }
}

/// Removes the waiter from the queue when its wait ends without a slot (deadline passed, or
/// the request went away and its future was dropped).
struct Ticket<'a> {
    queue: &'a Queue,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut waiters = self.queue.waiters.lock();
        if let Some(i) = waiters.iter().position(|w| w.id == self.id) {
            waiters.remove(i);
            self.queue.set_gauge(waiters.len());
        }
    }
}

/// Waits until a slot at a backend not in `tried` is handed over, or `deadline`.
pub(super) async fn wait(
    balancer: &Arc<Balancer>,
    tried: &[usize],
    deadline: Instant,
) -> Result<InFlight, Unavailable> {
    let queue = &balancer.queue;
    let (tx, mut rx) = oneshot::channel();
    let id = queue.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut waiters = queue.waiters.lock();
        if waiters.len() >= queue.capacity {
            metrics::UPSTREAM_QUEUE_REJECTED
                .with_label_values(&["full"])
                .inc();
            return Err(Unavailable::QueueFull);
        }
        queue.set_gauge(waiters.len() + 1);
        // The last look, after counting ourselves (see the module docs).
        if let Some(b) = balancer.take(tried) {
            queue.set_gauge(waiters.len());
            return Ok(InFlight::new(b, balancer.clone()));
        }
        waiters.push_back(Waiter {
            id,
            tried: tried.to_vec(),
            tx,
        });
    }
    let ticket = Ticket { queue, id };
    let waited = tokio::time::timeout_at(deadline.into(), &mut rx).await;
    match waited {
        // `slot_freed` took the waiter out of the queue when it sent the slot: no need to
        // look for it (a scan of the whole queue per served waiter).
        Ok(Ok(slot)) => {
            std::mem::forget(ticket);
            Ok(slot)
        }
        // Handed a slot in the instant the deadline passed: use it.
        _ => {
            drop(ticket);
            rx.try_recv().map_err(|_| {
                metrics::UPSTREAM_QUEUE_REJECTED
                    .with_label_values(&["timeout"])
                    .inc();
                if balancer.has_untried(tried) {
                    Unavailable::QueueTimeout
                } else {
                    Unavailable::NoBackend
                }
            })
        }
    }
}
