//! Choosing a backend for each try: weighted round robin (NGINX's smooth variant) or least
//! outstanding requests by power of two random choices, over the backends that are healthy
//! (active checks, see [`crate::health`]) and not ejected (passive: consecutive failures
//! eject a backend for a period that doubles with each ejection, never more than
//! `max_percent` of the backends at once). A retry never picks a backend already tried for
//! the same request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::{Algorithm, EjectionConfig, Upstream};
use crate::metrics;

pub struct Backend {
    pub index: usize,
    pub addr: SocketAddr,
    /// `ip:port`, the `backend` label of the metrics.
    pub label: String,
    pub weight: usize,
    outstanding: AtomicUsize,
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
}

/// Counts a request outstanding at a backend until dropped.
pub struct InFlight {
    backend: Arc<Backend>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.outstanding.fetch_sub(1, Ordering::Relaxed);
        metrics::UPSTREAM_IN_FLIGHT
            .with_label_values(&[&self.backend.label])
            .dec();
    }
}

pub struct Balancer {
    backends: Vec<Arc<Backend>>,
    algorithm: Algorithm,
    /// Smooth weighted round-robin order over backend indices, precomputed.
    wrr_order: Vec<usize>,
    cursor: AtomicUsize,
    epoch: Instant,
    ejection: EjectionConfig,
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
    pub fn new(upstreams: &[Upstream], algorithm: Algorithm, ejection: EjectionConfig) -> Self {
        let backends: Vec<Arc<Backend>> = upstreams
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
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ejections: AtomicU32::new(0),
                    healthy: AtomicBool::new(true),
                })
            })
            .collect();
        let weights: Vec<usize> = upstreams.iter().map(|u| u.weight).collect();
        Balancer {
            wrr_order: smooth_wrr_order(&weights),
            backends,
            algorithm,
            cursor: AtomicUsize::new(0),
            epoch: Instant::now(),
            ejection,
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

    /// Picks a backend not in `tried`, or `None` when every available one was tried.
    pub fn select(&self, tried: &[usize]) -> Option<Arc<Backend>> {
        let ok = |b: &Backend| !tried.contains(&b.index) && self.is_available(b);
        match self.algorithm {
            Algorithm::RoundRobin => {
                let n = self.wrr_order.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.backends[self.wrr_order[(start + i) % n]])
                    .find(|b| ok(b))
                    .cloned()
            }
            Algorithm::LeastOutstanding => {
                let candidates: Vec<&Arc<Backend>> =
                    self.backends.iter().filter(|b| ok(b)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0].clone()),
                    n => {
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
                        Some(if lx <= ly { x.clone() } else { y.clone() })
                    }
                }
            }
        }
    }

    pub fn start(&self, b: &Arc<Backend>) -> InFlight {
        b.outstanding.fetch_add(1, Ordering::Relaxed);
        metrics::UPSTREAM_IN_FLIGHT
            .with_label_values(&[&b.label])
            .inc();
        metrics::UPSTREAM_REQUESTS
            .with_label_values(&[&b.label])
            .inc();
        InFlight { backend: b.clone() }
    }

    pub fn report_success(&self, b: &Backend) {
        b.consecutive_failures.store(0, Ordering::Relaxed);
        // A backend that has behaved for `max_time` since its last ejection starts over.
        let until = b.ejected_until.load(Ordering::Relaxed);
        if until > 0 && self.now_ms() > until + self.ejection.max_time.as_millis() as u64 {
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
            .saturating_mul(1 << n)
            .min(self.ejection.max_time);
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

    fn ejection(max_percent: u32) -> EjectionConfig {
        EjectionConfig {
            consecutive_failures: 2,
            base_time: Duration::from_secs(10),
            max_time: Duration::from_secs(60),
            max_percent,
        }
    }

    fn upstreams(weights: &[usize]) -> Vec<Upstream> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Upstream {
                address: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                weight: w,
            })
            .collect()
    }

    #[test]
    fn smooth_round_robin_spreads_heavy_backends() {
        assert_eq!(smooth_wrr_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_wrr_order(&[1, 1]), vec![0, 1]);
    }

    #[test]
    fn round_robin_honours_weights() {
        let b = Balancer::new(&upstreams(&[3, 1]), Algorithm::RoundRobin, ejection(50));
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[b.select(&[]).unwrap().index] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn retries_never_pick_a_tried_backend() {
        let b = Balancer::new(
            &upstreams(&[1, 1, 1]),
            Algorithm::LeastOutstanding,
            ejection(50),
        );
        for _ in 0..50 {
            let pick = b.select(&[0, 2]).unwrap();
            assert_eq!(pick.index, 1);
        }
        assert!(b.select(&[0, 1, 2]).is_none());
    }

    #[test]
    fn least_outstanding_avoids_the_busy_backend() {
        let b = Balancer::new(
            &upstreams(&[1, 1]),
            Algorithm::LeastOutstanding,
            ejection(50),
        );
        let busy = b.backends()[0].clone();
        let _held: Vec<InFlight> = (0..5).map(|_| b.start(&busy)).collect();
        for _ in 0..20 {
            assert_eq!(b.select(&[]).unwrap().index, 1);
        }
    }

    #[test]
    fn consecutive_failures_eject_but_never_more_than_the_share() {
        let b = Balancer::new(&upstreams(&[1, 1]), Algorithm::RoundRobin, ejection(50));
        let (x, y) = (b.backends()[0].clone(), b.backends()[1].clone());
        b.report_failure(&x);
        assert!(!b.is_ejected(&x));
        b.report_failure(&x);
        assert!(b.is_ejected(&x));
        b.report_failure(&y);
        b.report_failure(&y);
        assert!(!b.is_ejected(&y), "50% of two backends is one");
        for _ in 0..10 {
            assert_eq!(b.select(&[]).unwrap().index, 1);
        }
    }
}
