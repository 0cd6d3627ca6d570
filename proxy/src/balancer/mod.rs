//! Choosing a backend for each try: weighted round robin (NGINX's smooth variant) or least
//! outstanding requests by power of two random choices, over the backends that are healthy
//! (active checks, see [`crate::health`]), not ejected (passive: consecutive failures eject a
//! backend for a period that doubles with each ejection, never more than `max_percent` of the
//! backends at once) and below their in-flight limit. A retry never picks a backend already
//! tried for the same request.
//!
//! Capacity is taken only by requests that go upstream: a try holds one of its backend's
//! `max_in_flight` slots ([`InFlight`]) until it ends. When every candidate is at its limit
//! the request waits in a bounded FIFO queue (HAProxy's `maxconn` and `timeout queue`); a slot
//! given back goes straight to the first waiter that may use it (see `queue.rs`).

mod queue;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::{Algorithm, EjectionConfig, UpstreamConfig};
use crate::metrics;
use queue::Queue;

pub struct Backend {
    pub index: usize,
    pub addr: SocketAddr,
    /// `ip:port`, the `backend` label of the metrics.
    pub label: String,
    pub weight: usize,
    /// Tries in flight, at most `limit`.
    outstanding: AtomicUsize,
    limit: usize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the balancer's epoch until which the backend is ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    healthy: AtomicBool,
}

impl Backend {
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Takes one in-flight slot if one is free.
    fn try_take(&self) -> bool {
        let mut now = self.outstanding.load(Ordering::SeqCst);
        loop {
            if now >= self.limit {
                return false;
            }
            match self.outstanding.compare_exchange_weak(
                now,
                now + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(seen) => now = seen,
            }
        }
    }
}

/// One try at a backend: holds one of its in-flight slots until dropped, when the slot goes
/// to the first queued request that may use it, or back to the backend.
pub struct InFlight {
    backend: Arc<Backend>,
    balancer: Arc<Balancer>,
}

impl InFlight {
    /// Wraps a slot already taken with [`Backend::try_take`].
    fn new(backend: Arc<Backend>, balancer: Arc<Balancer>) -> Self {
        metrics::UPSTREAM_IN_FLIGHT
            .with_label_values(&[&backend.label])
            .inc();
        metrics::UPSTREAM_REQUESTS
            .with_label_values(&[&backend.label])
            .inc();
        InFlight { backend, balancer }
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::UPSTREAM_IN_FLIGHT
            .with_label_values(&[&self.backend.label])
            .dec();
        self.backend.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.balancer.queue.slot_freed(&self.balancer);
    }
}

/// Why no backend was given to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every backend is down, ejected or already tried for this request.
    NoBackend,
    /// Every candidate is at its limit and the queue is full.
    QueueFull,
    /// Every candidate stayed at its limit for the whole wait.
    QueueTimeout,
}

pub struct Balancer {
    backends: Vec<Arc<Backend>>,
    algorithm: Algorithm,
    /// Smooth weighted round-robin order over backend indices, precomputed.
    wrr_order: Vec<usize>,
    cursor: AtomicUsize,
    epoch: Instant,
    ejection: EjectionConfig,
    queue: Queue,
}

/// NGINX's smooth weighted round robin, unrolled into one full cycle: weights 5,1,1 give
/// a a b a c a a rather than a a a a a b c.
fn smooth_wrr_order(weights: &[usize]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += w as i64;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
            .expect("at least one backend");
        current[best] -= total;
        order.push(best);
    }
    order
}

impl Balancer {
    pub fn new(config: &UpstreamConfig) -> Self {
        let limit = match config.max_in_flight {
            0 => usize::MAX,
            n => n,
        };
        let backends: Vec<Arc<Backend>> = config
            .servers
            .iter()
            .enumerate()
            .map(|(index, u)| {
                let label = u.address.to_string();
                metrics::UPSTREAM_HEALTHY
                    .with_label_values(&[&label])
                    .set(1);
                Arc::new(Backend {
                    index,
                    addr: u.address,
                    label,
                    weight: u.weight,
                    outstanding: AtomicUsize::new(0),
                    limit,
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ejections: AtomicU32::new(0),
                    healthy: AtomicBool::new(true),
                })
            })
            .collect();
        let weights: Vec<usize> = config.servers.iter().map(|u| u.weight).collect();
        Balancer {
            wrr_order: smooth_wrr_order(&weights),
            backends,
            algorithm: config.algorithm,
            cursor: AtomicUsize::new(0),
            epoch: Instant::now(),
            ejection: config.ejection.clone(),
            queue: Queue::new(config.queue_size),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_ejected(&self, b: &Backend) -> bool {
        b.ejected_until.load(Ordering::Relaxed) > self.now_ms()
    }

    pub fn is_available(&self, b: &Backend) -> bool {
        b.is_healthy() && !self.is_ejected(b)
    }

    /// Whether any backend is below its in-flight limit (up or not): without one, no queued
    /// request can be given a slot. Atomics only, no clock.
    fn has_free_slot(&self) -> bool {
        self.backends.iter().any(|b| b.outstanding() < b.limit)
    }

    /// Whether a backend not in `tried` is up (at its limit or not): a retry could go there.
    pub fn has_untried(&self, tried: &[usize]) -> bool {
        self.backends
            .iter()
            .any(|b| !tried.contains(&b.index) && self.is_available(b))
    }

    /// Picks a backend not in `tried` with a free slot and takes the slot; `None` when there
    /// is none.
    fn take(&self, tried: &[usize]) -> Option<Arc<Backend>> {
        let ok = |b: &Backend| !tried.contains(&b.index) && self.is_available(b);
        match self.algorithm {
            Algorithm::RoundRobin => {
                let n = self.wrr_order.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.backends[self.wrr_order[(start + i) % n]])
                    .find(|b| ok(b) && b.try_take())
                    .cloned()
            }
            Algorithm::LeastOutstanding => {
                let candidates: Vec<&Arc<Backend>> =
                    self.backends.iter().filter(|b| ok(b)).collect();
                let n = candidates.len();
                if n >= 2 {
                    let mut rng = rand::rng();
                    let a = rng.random_range(0..n);
                    let mut b = rng.random_range(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    // Compare outstanding/weight without division: oa/wa <= ob/wb.
                    let (x, y) = (candidates[a], candidates[b]);
                    let lx = x.outstanding() * y.weight;
                    let ly = y.outstanding() * x.weight;
                    let (first, second) = if lx <= ly { (x, y) } else { (y, x) };
                    if first.try_take() {
                        return Some(first.clone());
                    }
                    if second.try_take() {
                        return Some(second.clone());
                    }
                }
                // One candidate, or both picks at their limit: any with a free slot.
                candidates.into_iter().find(|b| b.try_take()).cloned()
            }
        }
    }

    /// A slot at a backend not in `tried`, without waiting.
    pub fn try_acquire(self: &Arc<Self>, tried: &[usize]) -> Result<InFlight, Unavailable> {
        match self.take(tried) {
            Some(b) => Ok(InFlight::new(b, self.clone())),
            None if self.has_untried(tried) => Err(Unavailable::QueueFull),
            None => Err(Unavailable::NoBackend),
        }
    }

    /// A slot at a backend not in `tried`, waiting in the queue until `deadline` when every
    /// candidate is at its limit.
    pub async fn acquire(
        self: &Arc<Self>,
        tried: &[usize],
        deadline: Instant,
    ) -> Result<InFlight, Unavailable> {
        match self.try_acquire(tried) {
            Err(Unavailable::QueueFull) => queue::wait(self, tried, deadline).await,
            done => done,
        }
    }

    pub fn report_success(&self, b: &Backend) {
        b.consecutive_failures.store(0, Ordering::Relaxed);
        // A backend that has behaved for `max_time` since its last ejection starts over.
        let until = b.ejected_until.load(Ordering::Relaxed);
        if until > 0 && self.now_ms() > until + self.ejection.max_time.get().as_millis() as u64 {
            b.ejections.store(0, Ordering::Relaxed);
        }
    }

    pub fn report_failure(&self, b: &Backend) {
        let threshold = self.ejection.consecutive_failures;
        if threshold == 0 {
            return;
        }
        let failures = b.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < threshold || self.is_ejected(b) {
            return;
        }
        let ejected = self.backends.iter().filter(|x| self.is_ejected(x)).count();
        if (ejected + 1) * 100 > self.ejection.max_percent as usize * self.backends.len() {
            return;
        }
        let n = b.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let period = self
            .ejection
            .base_time
            .get()
            .saturating_mul(1 << n)
            .min(self.ejection.max_time.get());
        b.ejected_until
            .store(self.now_ms() + period.as_millis() as u64, Ordering::Relaxed);
        b.consecutive_failures.store(0, Ordering::Relaxed);
        metrics::UPSTREAM_EJECTIONS
            .with_label_values(&[&b.label])
            .inc();
        metrics::UPSTREAM_HEALTHY
            .with_label_values(&[&b.label])
            .set(0);
        tracing::warn!(backend = %b.label, failures, period = ?period, "backend ejected");
    }

    /// Active health check verdict (after rise/fall).
    pub fn set_healthy(&self, b: &Backend, healthy: bool) {
        if b.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!(backend = %b.label, "backend healthy again");
            } else {
                tracing::warn!(backend = %b.label, "backend failed its health checks");
            }
        }
        self.refresh_gauge(b);
    }

    pub fn refresh_gauge(&self, b: &Backend) {
        metrics::UPSTREAM_HEALTHY
            .with_label_values(&[&b.label])
            .set(i64::from(self.is_available(b)));
    }

    /// Time left until an ejected backend comes back (for `Retry-After`).
    pub fn retry_after(&self) -> Duration {
        let now = self.now_ms();
        let soonest = self
            .backends
            .iter()
            .map(|b| b.ejected_until.load(Ordering::Relaxed).saturating_sub(now))
            .filter(|&ms| ms > 0)
            .min()
            .unwrap_or(1000);
        Duration::from_millis(soonest).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Upstream;
    use reviews_shared::units::HumanDuration;

    fn balancer(weights: &[usize], algorithm: Algorithm, max_percent: u32) -> Arc<Balancer> {
        balancer_with(weights, algorithm, max_percent, 0, 8)
    }

    fn balancer_with(
        weights: &[usize],
        algorithm: Algorithm,
        max_percent: u32,
        max_in_flight: usize,
        queue_size: usize,
    ) -> Arc<Balancer> {
        let config = UpstreamConfig {
            algorithm,
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Upstream {
                    address: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    weight: w,
                })
                .collect(),
            max_in_flight,
            queue_size,
            ejection: EjectionConfig {
                consecutive_failures: 2,
                base_time: HumanDuration(Duration::from_secs(10)),
                max_time: HumanDuration(Duration::from_secs(60)),
                max_percent,
            },
            ..UpstreamConfig::default()
        };
        Arc::new(Balancer::new(&config))
    }

    #[test]
    fn smooth_round_robin_spreads_heavy_backends() {
        assert_eq!(smooth_wrr_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_wrr_order(&[1, 1]), vec![0, 1]);
    }

    #[test]
    fn round_robin_honours_weights() {
        let b = balancer(&[3, 1], Algorithm::RoundRobin, 50);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[b.try_acquire(&[]).unwrap().backend().index] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn retries_never_pick_a_tried_backend() {
        let b = balancer(&[1, 1, 1], Algorithm::LeastOutstanding, 50);
        for _ in 0..50 {
            let pick = b.try_acquire(&[0, 2]).unwrap();
            assert_eq!(pick.backend().index, 1);
        }
        assert_eq!(
            b.try_acquire(&[0, 1, 2]).err(),
            Some(Unavailable::NoBackend)
        );
    }

    #[test]
    fn least_outstanding_avoids_the_busy_backend() {
        let b = balancer(&[1, 1], Algorithm::LeastOutstanding, 50);
        let _held: Vec<InFlight> = (0..5).map(|_| b.try_acquire(&[1]).unwrap()).collect();
        for _ in 0..20 {
            assert_eq!(b.try_acquire(&[]).unwrap().backend().index, 1);
        }
    }

    #[test]
    fn consecutive_failures_eject_but_never_more_than_the_share() {
        let b = balancer(&[1, 1], Algorithm::RoundRobin, 50);
        let (x, y) = (b.backends()[0].clone(), b.backends()[1].clone());
        b.report_failure(&x);
        assert!(!b.is_ejected(&x));
        b.report_failure(&x);
        assert!(b.is_ejected(&x));
        b.report_failure(&y);
        b.report_failure(&y);
        assert!(!b.is_ejected(&y), "50% of two backends is one");
        for _ in 0..10 {
            assert_eq!(b.try_acquire(&[]).unwrap().backend().index, 1);
        }
    }

    #[test]
    fn a_backend_at_its_limit_is_skipped_while_another_has_room() {
        let b = balancer_with(&[1, 1], Algorithm::RoundRobin, 50, 2, 8);
        let held: Vec<InFlight> = (0..2).map(|_| b.try_acquire(&[1]).unwrap()).collect();
        assert!(held.iter().all(|s| s.backend().index == 0));
        let more: Vec<InFlight> = (0..2).map(|_| b.try_acquire(&[]).unwrap()).collect();
        assert!(more.iter().all(|s| s.backend().index == 1));
        assert_eq!(b.try_acquire(&[]).err(), Some(Unavailable::QueueFull));
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_first_waiter_that_may_use_it() {
        let b = balancer_with(&[1, 1], Algorithm::RoundRobin, 50, 1, 8);
        let on0 = b.try_acquire(&[1]).unwrap();
        let on1 = b.try_acquire(&[0]).unwrap();
        let far = Instant::now() + Duration::from_secs(30);
        // The first waiter has tried backend 0 already; the second may use either.
        let (b1, b2) = (b.clone(), b.clone());
        let first = tokio::spawn(async move { b1.acquire(&[0], far).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = tokio::spawn(async move { b2.acquire(&[], far).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.queue.waiting.load(Ordering::SeqCst), 2);
        drop(on0);
        let got = second.await.unwrap().unwrap();
        assert_eq!(
            got.backend().index,
            0,
            "backend 0 went to the waiter that may use it"
        );
        drop(on1);
        let got = first.await.unwrap().unwrap();
        assert_eq!(got.backend().index, 1);
        assert_eq!(b.queue.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn freed_slots_go_to_waiters_in_arrival_order_and_the_rest_keep_waiting() {
        let b = balancer_with(&[1, 1], Algorithm::RoundRobin, 50, 2, 64);
        let mut held: Vec<InFlight> = (0..4).map(|_| b.try_acquire(&[]).unwrap()).collect();
        let far = Instant::now() + Duration::from_secs(30);
        let mut waiters = Vec::new();
        for _ in 0..40 {
            let b1 = b.clone();
            waiters.push(tokio::spawn(async move { b1.acquire(&[], far).await }));
            // Each waiter is queued before the next one starts, so arrival order is known.
            while b.queue.waiting.load(Ordering::SeqCst) < waiters.len() {
                tokio::task::yield_now().await;
            }
        }
        held.truncate(1);
        let mut served = Vec::new();
        for w in waiters.drain(..3) {
            served.push(w.await.unwrap().unwrap());
        }
        assert_eq!(
            b.queue.waiting.load(Ordering::SeqCst),
            37,
            "the rest still wait"
        );
        let in_use: usize = b.backends().iter().map(|x| x.outstanding()).sum();
        assert_eq!(in_use, 4, "every freed slot went to a waiter");
        drop(served);
        drop(held);
        let mut next = Vec::new();
        for w in waiters.drain(..4) {
            next.push(w.await.unwrap().unwrap());
        }
        assert_eq!(b.queue.waiting.load(Ordering::SeqCst), 33);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_length_and_in_time() {
        let b = balancer_with(&[1], Algorithm::RoundRobin, 50, 1, 1);
        let _held = b.try_acquire(&[]).unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        let b1 = b.clone();
        let waiting = tokio::spawn(async move { b1.acquire(&[], soon).await.err() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            b.acquire(&[], soon).await.err(),
            Some(Unavailable::QueueFull)
        );
        assert_eq!(waiting.await.unwrap(), Some(Unavailable::QueueTimeout));
        assert_eq!(
            b.queue.waiting.load(Ordering::SeqCst),
            0,
            "the timed-out waiter left"
        );
    }

    #[tokio::test]
    async fn a_waiter_whose_request_went_away_leaves_the_queue() {
        let b = balancer_with(&[1], Algorithm::RoundRobin, 50, 1, 4);
        let held = b.try_acquire(&[]).unwrap();
        let far = Instant::now() + Duration::from_secs(30);
        let b1 = b.clone();
        let waiting = tokio::spawn(async move { b1.acquire(&[], far).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(b.queue.waiting.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(b.backends()[0].outstanding(), 0, "the slot is not lost");
    }
}
