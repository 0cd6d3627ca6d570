//! The edge's configuration: [`file::EdgeFile`] is what the operator writes (TOML with human
//! units, env overrides under `REVIEWS_EDGE__…`), [`EdgeConfig`] is what the running edge
//! uses. `TryFrom` joins them and checks what serde cannot. Another crate (`reviews up`) can
//! build an [`EdgeConfig`] directly: start from [`EdgeConfig::default`] and set the upstreams,
//! listen and admin addresses and the cache size.

pub mod file;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use file::{Algorithm, EdgeFile, EncodingName, LogFormat};
use reviews_shared::config::{self as shared_config, ConfigError, Override};

/// Prefix of environment overrides: `REVIEWS_EDGE__CACHE__MAX_SIZE=1GiB`.
pub const ENV_PREFIX: &str = "REVIEWS_EDGE";

/// File descriptors needed besides two per connection (downstream + upstream): listeners,
/// the upstream keepalive pool, health checks, logs.
const FD_MARGIN: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum EdgeConfigError {
    #[error(transparent)]
    Load(#[from] ConfigError),
    #[error("{key} = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(key: &'static str, value: impl ToString, reason: impl Into<String>) -> EdgeConfigError {
    EdgeConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The runtime model of the edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Public listener. Port 0 picks a free port (see [`crate::start`]).
    pub listen: SocketAddr,
    /// Internal listener: `/metrics`, `/healthz`, `/backends`, `/purge`.
    pub admin: SocketAddr,
    pub admin_token: Option<String>,
    pub threads: usize,
    pub work_stealing: bool,
    pub max_connections: usize,
    pub max_connections_wait: Duration,
    /// RLIMIT_NOFILE to raise the soft limit to.
    pub nofile: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub keepalive_requests: Option<u32>,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub compression: CompressionConfig,
    pub shutdown: ShutdownConfig,
    pub log_format: LogFormat,
    pub log_level: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub algorithm: Algorithm,
    pub servers: Vec<Upstream>,
    pub keepalive_pool: usize,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub total_timeout: Duration,
    pub retries: usize,
    pub health: HealthConfig,
    pub ejection: EjectionConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub address: SocketAddr,
    pub weight: usize,
}

impl Upstream {
    pub fn new(address: SocketAddr) -> Self {
        Upstream { address, weight: 1 }
    }
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub enabled: bool,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone)]
pub struct EjectionConfig {
    pub consecutive_failures: u32,
    pub base_time: Duration,
    pub max_time: Duration,
    pub max_percent: u32,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub enabled: bool,
    pub max_size: u64,
    pub max_object_size: usize,
    pub default_ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub lock_timeout: Duration,
    pub routes: Vec<RouteRule>,
}

/// Which requests of a path may be cached and which query parameters make up their key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// Exact path, or a prefix when `prefix` is set.
    pub path: String,
    pub prefix: bool,
    /// Parameters in the key; `None` keeps all of them.
    pub params: Option<Vec<String>>,
    /// Parameters equal to these values are left out of the key.
    pub defaults: BTreeMap<String, String>,
    pub ttl: Option<Duration>,
}

impl RouteRule {
    /// A rule for an exact path keeping every query parameter.
    pub fn exact(path: impl Into<String>) -> Self {
        RouteRule {
            path: path.into(),
            prefix: false,
            params: None,
            defaults: BTreeMap::new(),
            ttl: None,
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        if self.prefix {
            path.starts_with(&self.path)
        } else {
            path == self.path
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompressionConfig {
    pub enabled: bool,
    pub min_size: usize,
    pub encodings: Vec<EncodingName>,
    pub gzip_level: u32,
    pub brotli_quality: u32,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    pub grace_period: Duration,
    pub graceful_timeout: Duration,
    pub upgrade_sock: String,
    pub pid_file: String,
}

impl Default for EdgeConfig {
    /// The file defaults with no upstreams: set `upstream.servers` before starting.
    fn default() -> Self {
        EdgeConfig::from_file_unchecked(EdgeFile::default()).expect("the file defaults are valid")
    }
}

impl EdgeConfig {
    /// Loads a config file (or the defaults when `path` is `None`), applies `REVIEWS_EDGE__…`
    /// environment overrides and then `overrides`, and validates the result.
    pub fn load(
        path: Option<&Path>,
        overrides: &[Override],
    ) -> Result<(EdgeFile, EdgeConfig), EdgeConfigError> {
        let mut all = shared_config::env_overrides(ENV_PREFIX);
        all.extend_from_slice(overrides);
        let file: EdgeFile = shared_config::load(path, &all)?;
        let config = EdgeConfig::try_from(file.clone())?;
        Ok((file, config))
    }

    /// Parses TOML text (tests, `--check` of an inline config).
    pub fn from_toml(text: &str) -> Result<EdgeConfig, EdgeConfigError> {
        let file: EdgeFile = toml::from_str(text).map_err(|e| ConfigError::File {
            path: "(inline)".into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        EdgeConfig::try_from(file)
    }

    /// The defaults in front of `upstreams`, caching the Reviews API's GET routes
    /// (`/reviews`, `/reviews/meta` and the legacy `/dbreviews`, `/dbmeta`) with the keys of
    /// deploy/edge.example.toml. For `reviews up`; set `listen`, `admin`, `cache.max_size` after.
    pub fn for_reviews(upstreams: impl IntoIterator<Item = SocketAddr>) -> EdgeConfig {
        let mut c = EdgeConfig::default();
        c.upstream.servers = upstreams.into_iter().map(Upstream::new).collect();
        c.cache.routes = reviews_routes();
        c
    }

    /// Parses TOML text without the final checks, for callers that fill in the upstreams
    /// themselves before [`crate::start`] (which validates).
    pub fn from_toml_unvalidated(text: &str) -> Result<EdgeConfig, EdgeConfigError> {
        let file: EdgeFile = toml::from_str(text).map_err(|e| ConfigError::File {
            path: "(inline)".into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        EdgeConfig::from_file_unchecked(file)
    }

    /// Descriptors this config needs: two per connection plus a margin.
    pub fn nofile_needed(&self) -> u64 {
        self.max_connections as u64 * 2 + FD_MARGIN
    }

    /// Checks what must hold before starting: at least one upstream, limits that fit.
    pub fn validate(&self) -> Result<(), EdgeConfigError> {
        if self.upstream.servers.is_empty() {
            return Err(invalid(
                "upstream.servers",
                "[]",
                "at least one upstream is needed, e.g. [[upstream.servers]] address = \"127.0.0.1:3000\"",
            ));
        }
        if self.nofile < self.nofile_needed() {
            return Err(invalid(
                "nofile",
                self.nofile,
                format!(
                    "max_connections = {} needs at least {} file descriptors (2 per connection + {FD_MARGIN})",
                    self.max_connections,
                    self.nofile_needed()
                ),
            ));
        }
        Ok(())
    }

    fn from_file_unchecked(f: EdgeFile) -> Result<EdgeConfig, EdgeConfigError> {
        let addr = |key: &'static str, s: &str| -> Result<SocketAddr, EdgeConfigError> {
            s.parse().map_err(|_| {
                invalid(
                    key,
                    s,
                    "expected an IP address with a port, like \"127.0.0.1:8080\"",
                )
            })
        };
        let mut servers = Vec::with_capacity(f.upstream.servers.len());
        for s in &f.upstream.servers {
            if s.weight == 0 || s.weight > 1000 {
                return Err(invalid(
                    "upstream.servers.weight",
                    s.weight,
                    "must be between 1 and 1000",
                ));
            }
            servers.push(Upstream {
                address: addr("upstream.servers.address", &s.address)?,
                weight: s.weight,
            });
        }
        let mut routes = Vec::with_capacity(f.cache.routes.len());
        for r in &f.cache.routes {
            if !r.path.starts_with('/') {
                return Err(invalid("cache.routes.path", &r.path, "must start with '/'"));
            }
            let (path, prefix) = match r.path.strip_suffix('*') {
                Some(p) => (p.to_owned(), true),
                None => (r.path.clone(), false),
            };
            if path.contains('*') {
                return Err(invalid(
                    "cache.routes.path",
                    &r.path,
                    "'*' is only allowed at the end",
                ));
            }
            routes.push(RouteRule {
                path,
                prefix,
                params: r.params.clone(),
                defaults: r.defaults.clone(),
                ttl: r.ttl.map(|t| t.get()),
            });
        }
        let positive = |key: &'static str, d: Duration| {
            if d.is_zero() {
                Err(invalid(key, "0s", "must be greater than zero"))
            } else {
                Ok(d)
            }
        };
        if f.threads == 0 || f.threads > 256 {
            return Err(invalid("threads", f.threads, "must be between 1 and 256"));
        }
        if f.max_connections == 0 {
            return Err(invalid("max_connections", 0, "must be at least 1"));
        }
        if f.upstream.ejection.max_percent > 100 {
            return Err(invalid(
                "upstream.ejection.max_percent",
                f.upstream.ejection.max_percent,
                "is a percentage (0..=100)",
            ));
        }
        if f.upstream.health.rise == 0 || f.upstream.health.fall == 0 {
            return Err(invalid(
                "upstream.health.rise/fall",
                0,
                "must be at least 1",
            ));
        }
        if !f.upstream.health.path.starts_with('/') {
            return Err(invalid(
                "upstream.health.path",
                &f.upstream.health.path,
                "must start with '/'",
            ));
        }
        if f.compression.gzip_level > 9 {
            return Err(invalid(
                "compression.gzip_level",
                f.compression.gzip_level,
                "must be 0..=9",
            ));
        }
        if f.compression.brotli_quality > 11 {
            return Err(invalid(
                "compression.brotli_quality",
                f.compression.brotli_quality,
                "must be 0..=11",
            ));
        }
        let max_object = f.cache.max_object_size.bytes();
        if max_object > u64::from(u32::MAX / 4) {
            return Err(invalid(
                "cache.max_object_size",
                f.cache.max_object_size,
                "must be below 1GiB",
            ));
        }
        if f.cache.enabled && max_object >= f.cache.max_size.bytes() {
            return Err(invalid(
                "cache.max_object_size",
                f.cache.max_object_size,
                "must be smaller than cache.max_size",
            ));
        }
        let max_connections = f.max_connections;
        let nofile = if f.nofile == 0 {
            max_connections as u64 * 2 + FD_MARGIN
        } else {
            f.nofile
        };
        let token = f.admin.token.trim().to_owned();
        Ok(EdgeConfig {
            listen: addr("listen.address", &f.listen.address)?,
            admin: addr("admin.address", &f.admin.address)?,
            admin_token: (!token.is_empty()).then_some(token),
            threads: f.threads,
            work_stealing: f.work_stealing,
            max_connections,
            max_connections_wait: f.max_connections_wait.get(),
            nofile,
            max_header_bytes: f.listen.max_header_bytes.bytes() as usize,
            max_headers: f.listen.max_headers,
            header_read_timeout: positive(
                "listen.header_read_timeout",
                f.listen.header_read_timeout.get(),
            )?,
            keepalive_requests: (f.listen.keepalive_requests > 0)
                .then_some(f.listen.keepalive_requests),
            upstream: UpstreamConfig {
                algorithm: f.upstream.algorithm,
                servers,
                keepalive_pool: f.upstream.keepalive_pool,
                keepalive_timeout: f.upstream.keepalive_timeout.get(),
                connect_timeout: positive(
                    "upstream.timeouts.connect",
                    f.upstream.timeouts.connect.get(),
                )?,
                read_timeout: positive("upstream.timeouts.read", f.upstream.timeouts.read.get())?,
                write_timeout: positive(
                    "upstream.timeouts.write",
                    f.upstream.timeouts.write.get(),
                )?,
                total_timeout: positive(
                    "upstream.timeouts.total",
                    f.upstream.timeouts.total.get(),
                )?,
                retries: f.upstream.retries.attempts,
                health: HealthConfig {
                    enabled: f.upstream.health.enabled,
                    path: f.upstream.health.path.clone(),
                    interval: positive(
                        "upstream.health.interval",
                        f.upstream.health.interval.get(),
                    )?,
                    timeout: positive("upstream.health.timeout", f.upstream.health.timeout.get())?,
                    rise: f.upstream.health.rise,
                    fall: f.upstream.health.fall,
                },
                ejection: EjectionConfig {
                    consecutive_failures: f.upstream.ejection.consecutive_failures,
                    base_time: positive(
                        "upstream.ejection.base_time",
                        f.upstream.ejection.base_time.get(),
                    )?,
                    max_time: f
                        .upstream
                        .ejection
                        .max_time
                        .get()
                        .max(f.upstream.ejection.base_time.get()),
                    max_percent: f.upstream.ejection.max_percent,
                },
            },
            cache: CacheConfig {
                enabled: f.cache.enabled,
                max_size: f.cache.max_size.bytes(),
                max_object_size: max_object as usize,
                default_ttl: f.cache.default_ttl.get(),
                stale_while_revalidate: f.cache.stale_while_revalidate.get(),
                stale_if_error: f.cache.stale_if_error.get(),
                lock_timeout: f.cache.lock_timeout.get(),
                routes,
            },
            compression: CompressionConfig {
                enabled: f.compression.enabled,
                min_size: f.compression.min_size.bytes() as usize,
                encodings: f.compression.encodings.clone(),
                gzip_level: f.compression.gzip_level,
                brotli_quality: f.compression.brotli_quality,
            },
            shutdown: ShutdownConfig {
                grace_period: f.shutdown.grace_period.get(),
                graceful_timeout: f.shutdown.graceful_timeout.get(),
                upgrade_sock: f.shutdown.upgrade_sock.clone(),
                pid_file: f.shutdown.pid_file.clone(),
            },
            log_format: f.log.format,
            log_level: f.log.level.clone(),
        })
    }
}

/// The cache rules of the Reviews API: list pages keyed by product, page, count and sort
/// (defaults dropped), meta pages by product.
pub fn reviews_routes() -> Vec<RouteRule> {
    let list = |path: &str, extra: &[&str]| RouteRule {
        path: path.into(),
        prefix: false,
        params: Some(
            ["product_id", "page", "count", "sort"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect(),
        ),
        defaults: BTreeMap::from([
            ("page".into(), "1".into()),
            ("count".into(), "5".into()),
            ("sort".into(), "relevant".into()),
        ]),
        ttl: None,
    };
    let meta = |path: &str, extra: &[&str]| RouteRule {
        path: path.into(),
        prefix: false,
        params: Some(
            ["product_id"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect(),
        ),
        defaults: BTreeMap::new(),
        ttl: None,
    };
    vec![
        list("/reviews", &[]),
        meta("/reviews/meta", &[]),
        list("/dbreviews", &["id"]),
        meta("/dbmeta", &["id"]),
    ]
}

impl TryFrom<EdgeFile> for EdgeConfig {
    type Error = EdgeConfigError;

    fn try_from(f: EdgeFile) -> Result<Self, Self::Error> {
        let c = EdgeConfig::from_file_unchecked(f)?;
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_upstreams_is_rejected() {
        let e = EdgeConfig::from_toml("").unwrap_err().to_string();
        assert!(e.contains("upstream.servers"), "{e}");
    }

    #[test]
    fn a_typo_names_the_key_and_line() {
        let e = EdgeConfig::from_toml("[cache]\nmax_size = \"1GiB\"\nmax_sise = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_sise") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn a_bad_size_names_the_value() {
        let e = EdgeConfig::from_toml("[cache]\nmax_size = \"3GB!\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("3GB!") && e.contains("3GiB"), "{e}");
    }

    #[test]
    fn nofile_below_what_max_connections_needs_is_rejected() {
        let text = "max_connections = 10000\nnofile = 1024\n[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n";
        let e = EdgeConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains("nofile") && e.contains("20256"), "{e}");
    }

    #[test]
    fn for_reviews_matches_the_example_routes() {
        let c = EdgeConfig::for_reviews(["127.0.0.1:3001".parse().unwrap()]);
        c.validate().unwrap();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/edge.example.toml"
        ))
        .unwrap();
        let example = EdgeConfig::from_toml(&text).unwrap();
        assert_eq!(c.cache.routes, example.cache.routes);
    }

    #[test]
    fn prefix_routes_end_in_a_star() {
        let text = "[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n[[cache.routes]]\npath = \"/static/*\"\n";
        let c = EdgeConfig::from_toml(text).unwrap();
        assert!(c.cache.routes[0].prefix && c.cache.routes[0].matches("/static/a.css"));
    }
}
