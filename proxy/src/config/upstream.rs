//! `[upstream]`: the API processes behind the edge, how requests are spread over them, how
//! long a try may take, when it is retried, and how a failing backend is taken out.

use std::net::SocketAddr;

use reviews_shared::units::HumanDuration;
use serde::{Deserialize, Serialize};

use super::{EdgeConfigError, invalid, millis, positive, secs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Smooth weighted round robin (NGINX's algorithm).
    RoundRobin,
    /// Power of two random choices, picking the backend with fewer requests in flight
    /// relative to its weight.
    LeastOutstanding,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub algorithm: Algorithm,
    pub servers: Vec<Upstream>,
    /// Idle upstream connections kept for reuse, across all backends.
    pub keepalive_pool: usize,
    /// How long an idle upstream connection stays in the pool.
    pub keepalive_timeout: HumanDuration,
    /// Requests in flight at one backend at most (HAProxy: `maxconn` per server); 0 = no
    /// limit. A request finding every backend at its limit waits in the queue.
    pub max_in_flight: usize,
    /// Requests waiting for a backend at most, across all backends. Beyond it, and after
    /// `queue_timeout` in it: a stale copy when there is one, else 503 with `Retry-After`.
    pub queue_size: usize,
    /// Longest wait in the queue (HAProxy: `timeout queue`).
    pub queue_timeout: HumanDuration,
    pub timeouts: TimeoutsConfig,
    pub retries: RetriesConfig,
    pub health: HealthConfig,
    pub ejection: EjectionConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            algorithm: Algorithm::RoundRobin,
            servers: Vec::new(),
            keepalive_pool: 256,
            keepalive_timeout: secs(60),
            max_in_flight: 128,
            queue_size: 1024,
            queue_timeout: millis(1000),
            timeouts: TimeoutsConfig::default(),
            retries: RetriesConfig::default(),
            health: HealthConfig::default(),
            ejection: EjectionConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub address: SocketAddr,
    #[serde(default = "one")]
    pub weight: usize,
}

fn one() -> usize {
    1
}

impl Upstream {
    pub fn new(address: SocketAddr) -> Self {
        Upstream { address, weight: 1 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// TCP connect to a backend.
    pub connect: HumanDuration,
    /// Longest wait for any single read from a backend (header or body), for requests that
    /// are not retried (POST, PUT, …).
    pub read: HumanDuration,
    /// The same for GET and HEAD, which are retried on another backend when it passes: a
    /// frozen backend costs a reader this much, not `read`.
    pub per_try: HumanDuration,
    /// Longest wait for any single write to a backend.
    pub write: HumanDuration,
    /// Budget for the whole upstream phase of one request, queue and retries included.
    pub total: HumanDuration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: secs(1),
            read: secs(5),
            per_try: secs(1),
            write: secs(5),
            total: secs(15),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetriesConfig {
    /// Further tries after the first, each on a backend not tried yet for this request.
    pub attempts: usize,
}

impl Default for RetriesConfig {
    fn default() -> Self {
        RetriesConfig { attempts: 2 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub enabled: bool,
    pub path: String,
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    /// Consecutive passing checks that bring a backend back.
    pub rise: u32,
    /// Consecutive failing checks that take a backend out.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            path: "/readyz".into(),
            interval: secs(2),
            timeout: secs(1),
            rise: 2,
            fall: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionConfig {
    /// Consecutive failed tries (connect error, timeout, reset, 502/503/504) that eject a
    /// backend; 0 disables passive ejection.
    pub consecutive_failures: u32,
    /// First ejection lasts this long; each further one doubles it up to `max_time`.
    pub base_time: HumanDuration,
    pub max_time: HumanDuration,
    /// Never eject more than this share of the backends (percent).
    pub max_percent: u32,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: 3,
            base_time: secs(5),
            max_time: secs(120),
            max_percent: 50,
        }
    }
}

impl UpstreamConfig {
    pub(super) fn validate(&self) -> Result<(), EdgeConfigError> {
        if self.servers.is_empty() {
            return Err(invalid(
                "upstream.servers",
                "[]",
                "at least one upstream is needed, e.g. [[upstream.servers]] address = \"127.0.0.1:3000\"",
            ));
        }
        if let Some(s) = self
            .servers
            .iter()
            .find(|s| s.weight == 0 || s.weight > 1000)
        {
            return Err(invalid(
                "upstream.servers.weight",
                s.weight,
                "must be between 1 and 1000",
            ));
        }
        positive("upstream.queue_timeout", self.queue_timeout)?;
        let t = &self.timeouts;
        positive("upstream.timeouts.connect", t.connect)?;
        positive("upstream.timeouts.read", t.read)?;
        positive("upstream.timeouts.per_try", t.per_try)?;
        positive("upstream.timeouts.write", t.write)?;
        positive("upstream.timeouts.total", t.total)?;
        let h = &self.health;
        positive("upstream.health.interval", h.interval)?;
        positive("upstream.health.timeout", h.timeout)?;
        if h.rise == 0 || h.fall == 0 {
            return Err(invalid(
                "upstream.health.rise/fall",
                0,
                "must be at least 1",
            ));
        }
        if !h.path.starts_with('/') {
            return Err(invalid(
                "upstream.health.path",
                format!("{:?}", h.path),
                "must start with '/'",
            ));
        }
        let e = &self.ejection;
        positive("upstream.ejection.base_time", e.base_time)?;
        if e.max_time.get() < e.base_time.get() {
            return Err(invalid(
                "upstream.ejection.max_time",
                e.max_time,
                "must be at least upstream.ejection.base_time",
            ));
        }
        if e.max_percent > 100 {
            return Err(invalid(
                "upstream.ejection.max_percent",
                e.max_percent,
                "is a percentage (0..=100)",
            ));
        }
        Ok(())
    }
}
