//! The config file as the operator writes it: serde types with defaults, `deny_unknown_fields`
//! so a typo is an error naming the key and line, and human units. [`super::EdgeConfig`] is
//! built from this by `TryFrom`, which checks what serde cannot (non-empty upstreams,
//! addresses that parse, limits that fit together).

use std::collections::BTreeMap;

use reviews_shared::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};

fn secs(s: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(s))
}

fn millis(ms: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(ms))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeFile {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Let idle worker threads take tasks from busy ones (Tokio's multi-thread scheduler).
    /// `false` runs one single-threaded runtime per thread: no cross-thread wake-ups. Pingora
    /// then supports only one server per process: a second `start` in the same process does
    /// not come up (tests keep the default).
    pub work_stealing: bool,
    /// Downstream requests served at once; beyond it a request waits `max_connections_wait`
    /// for a slot, then gets 503.
    pub max_connections: usize,
    pub max_connections_wait: HumanDuration,
    /// RLIMIT_NOFILE to raise to at startup; 0 means "what max_connections needs".
    pub nofile: u64,
    pub listen: ListenFile,
    pub admin: AdminFile,
    pub upstream: UpstreamFile,
    pub cache: CacheFile,
    pub compression: CompressionFile,
    pub shutdown: ShutdownFile,
    pub log: LogFile,
}

impl Default for EdgeFile {
    fn default() -> Self {
        EdgeFile {
            threads: 1,
            work_stealing: true,
            max_connections: 4096,
            max_connections_wait: millis(50),
            nofile: 0,
            listen: ListenFile::default(),
            admin: AdminFile::default(),
            upstream: UpstreamFile::default(),
            cache: CacheFile::default(),
            compression: CompressionFile::default(),
            shutdown: ShutdownFile::default(),
            log: LogFile::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenFile {
    pub address: String,
    /// Largest request header block accepted (431 beyond it).
    pub max_header_bytes: ByteSize,
    /// Largest number of request header fields accepted (431 beyond it).
    pub max_headers: usize,
    /// How long an idle keep-alive connection may take to send its next request header.
    pub header_read_timeout: HumanDuration,
    /// Requests served on one connection before it is closed (0 = no limit).
    pub keepalive_requests: u32,
}

impl Default for ListenFile {
    fn default() -> Self {
        ListenFile {
            address: "0.0.0.0:8080".into(),
            max_header_bytes: ByteSize(16 << 10),
            max_headers: 100,
            header_read_timeout: secs(60),
            keepalive_requests: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    /// Internal listener for `/metrics`, `/healthz`, `/backends` and `/purge`.
    pub address: String,
    /// Bearer token for `/purge`; purging is refused while it is empty.
    pub token: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            address: "127.0.0.1:9090".into(),
            token: String::new(),
        }
    }
}

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
pub struct UpstreamFile {
    pub algorithm: Algorithm,
    pub servers: Vec<ServerFile>,
    /// Idle upstream connections kept for reuse, across all backends.
    pub keepalive_pool: usize,
    /// How long an idle upstream connection stays in the pool.
    pub keepalive_timeout: HumanDuration,
    pub timeouts: TimeoutsFile,
    pub retries: RetriesFile,
    pub health: HealthFile,
    pub ejection: EjectionFile,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            algorithm: Algorithm::RoundRobin,
            servers: Vec::new(),
            keepalive_pool: 256,
            keepalive_timeout: secs(60),
            timeouts: TimeoutsFile::default(),
            retries: RetriesFile::default(),
            health: HealthFile::default(),
            ejection: EjectionFile::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub address: String,
    #[serde(default = "one")]
    pub weight: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsFile {
    /// TCP connect to a backend.
    pub connect: HumanDuration,
    /// Longest wait for any single read from a backend (header or body).
    pub read: HumanDuration,
    /// Longest wait for any single write to a backend.
    pub write: HumanDuration,
    /// Budget for the whole upstream phase of one request, retries included.
    pub total: HumanDuration,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        TimeoutsFile {
            connect: secs(1),
            read: secs(5),
            write: secs(5),
            total: secs(15),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetriesFile {
    /// Further tries after the first, each on a backend not tried yet for this request.
    pub attempts: usize,
}

impl Default for RetriesFile {
    fn default() -> Self {
        RetriesFile { attempts: 2 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthFile {
    pub enabled: bool,
    pub path: String,
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    /// Consecutive passing checks that bring a backend back.
    pub rise: u32,
    /// Consecutive failing checks that take a backend out.
    pub fall: u32,
}

impl Default for HealthFile {
    fn default() -> Self {
        HealthFile {
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
pub struct EjectionFile {
    /// Consecutive failed requests (connect error, timeout, reset, 502/503/504) that eject a
    /// backend; 0 disables passive ejection.
    pub consecutive_failures: u32,
    /// First ejection lasts this long; each further one doubles it up to `max_time`.
    pub base_time: HumanDuration,
    pub max_time: HumanDuration,
    /// Never eject more than this share of the backends (percent).
    pub max_percent: u32,
}

impl Default for EjectionFile {
    fn default() -> Self {
        EjectionFile {
            consecutive_failures: 3,
            base_time: secs(5),
            max_time: secs(120),
            max_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheFile {
    pub enabled: bool,
    /// Memory the cache may hold: keys, headers, bodies (all stored encodings) and per-entry
    /// overhead.
    pub max_size: ByteSize,
    /// Responses larger than this are passed through, not stored.
    pub max_object_size: ByteSize,
    /// Freshness when the origin sends no `max-age`/`s-maxage`.
    pub default_ttl: HumanDuration,
    /// After expiry, serve the stale copy while one request refreshes it.
    pub stale_while_revalidate: HumanDuration,
    /// After expiry, serve the stale copy when every backend fails.
    pub stale_if_error: HumanDuration,
    /// How long concurrent misses wait for the one filling request before going upstream
    /// themselves.
    pub lock_timeout: HumanDuration,
    /// Routes whose GET/HEAD responses may be cached. Nothing else is.
    pub routes: Vec<RouteFile>,
}

impl Default for CacheFile {
    fn default() -> Self {
        CacheFile {
            enabled: true,
            max_size: ByteSize(256 << 20),
            max_object_size: ByteSize(1 << 20),
            default_ttl: secs(60),
            stale_while_revalidate: secs(10),
            stale_if_error: secs(300),
            lock_timeout: secs(2),
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Exact path (`/reviews`), or a prefix ending in `*` (`/static/*`).
    pub path: String,
    /// Query parameters that are part of the cache key; absent means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
    /// A parameter equal to its default here is left out of the key, so `?product_id=2` and
    /// `?product_id=2&page=1` share an entry when `page = "1"` is listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, String>,
    /// Freshness for this route when the origin sends none (overrides `cache.default_ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingName {
    Br,
    Gzip,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionFile {
    pub enabled: bool,
    /// Bodies smaller than this are sent as they are.
    pub min_size: ByteSize,
    /// Encodings stored next to the identity body, in order of preference.
    pub encodings: Vec<EncodingName>,
    pub gzip_level: u32,
    pub brotli_quality: u32,
}

impl Default for CompressionFile {
    fn default() -> Self {
        CompressionFile {
            enabled: true,
            min_size: ByteSize(1024),
            encodings: vec![EncodingName::Gzip],
            gzip_level: 6,
            brotli_quality: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownFile {
    /// After SIGTERM, keep serving in-flight requests this long before stopping.
    pub grace_period: HumanDuration,
    /// Then give the runtimes this long to finish.
    pub graceful_timeout: HumanDuration,
    /// Socket the old and new process use to hand over listeners on `--upgrade`.
    pub upgrade_sock: String,
    pub pid_file: String,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        ShutdownFile {
            grace_period: secs(10),
            graceful_timeout: secs(5),
            upgrade_sock: "/tmp/reviews-edge-upgrade.sock".into(),
            pid_file: "/tmp/reviews-edge.pid".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Compact,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogFile {
    pub format: LogFormat,
    /// A tracing filter (`info`, `reviews_proxy=debug,pingora=warn`).
    pub level: String,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}
