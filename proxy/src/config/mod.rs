//! The edge's configuration: one model, read from TOML (`deploy/edge.example.toml`), then
//! `REVIEWS_EDGE__…` environment overrides, and used as it is by the running edge. Addresses,
//! durations (`"2s"`) and sizes (`"3GiB"`) are typed when the file is read, so a bad value is
//! an error naming its key and line; unknown keys are errors too. [`EdgeConfig::validate`]
//! then checks, section by section, what types cannot say (limits that fit together).
//!
//! Another crate (`reviews up`) builds one from a TOML text of its own and sets the upstreams,
//! listen and admin addresses before [`crate::start`], which validates.

mod cache;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reviews_shared::config::{self as shared_config, ConfigError, Override};
pub use reviews_shared::invalidation::InvalidationConfig;
pub use reviews_shared::logging::{LogConfig, LogFormat};
use reviews_shared::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};

pub use cache::{CacheConfig, CompressionConfig, EncodingName, RouteRule};
pub use tls::{Alpn, ForwardedConfig, H2Config, IpNet, TlsListenerConfig, TlsVersion};
pub use upstream::{
    Algorithm, EjectionConfig, HealthConfig, RetriesConfig, TimeoutsConfig, Upstream,
    UpstreamConfig,
};

/// Prefix of environment overrides: `REVIEWS_EDGE__CACHE__MAX_SIZE=1GiB`.
pub const ENV_PREFIX: &str = "REVIEWS_EDGE";

/// File descriptors needed besides two per connection (downstream + upstream): listeners,
/// the upstream keepalive pool, health checks, logs.
const FD_MARGIN: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum EdgeConfigError {
    #[error(transparent)]
    Load(#[from] ConfigError),
    #[error("{key} = {value}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// An [`EdgeConfigError::Invalid`]; `value` is shown as the operator would write it.
pub(crate) fn invalid(
    key: &'static str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> EdgeConfigError {
    EdgeConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `d` unless it is zero.
pub(crate) fn positive(key: &'static str, d: HumanDuration) -> Result<(), EdgeConfigError> {
    if d.get().is_zero() {
        Err(invalid(key, "\"0s\"", "must be greater than zero"))
    } else {
        Ok(())
    }
}

fn secs(s: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(s))
}

fn millis(ms: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(ms))
}

/// The whole edge: top-level limits and one section per concern.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Let idle worker threads take tasks from busy ones (Tokio's multi-thread scheduler).
    /// `false` runs one single-threaded runtime per thread: no cross-thread wake-ups. Pingora
    /// then supports only one server per process: a second `start` in the same process does
    /// not come up (tests keep the default).
    pub work_stealing: bool,
    /// Open downstream connections, idle keep-alive ones included (NGINX: worker_connections).
    /// Beyond it a new connection waits `max_connections_wait` for one to close, then is
    /// answered 503 and closed.
    pub max_connections: usize,
    pub max_connections_wait: HumanDuration,
    /// RLIMIT_NOFILE to raise to at startup; 0 means "what max_connections needs".
    pub nofile: u64,
    pub listen: ListenConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub compression: CompressionConfig,
    pub h2: H2Config,
    pub forwarded: ForwardedConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    /// Purges shared with the other edges through Redis; absent, this edge purges only its
    /// own cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalidation: Option<InvalidationConfig>,
}

impl Default for EdgeConfig {
    /// The defaults, with no upstreams: set `upstream.servers` before starting.
    fn default() -> Self {
        EdgeConfig {
            threads: 1,
            work_stealing: true,
            max_connections: 4096,
            max_connections_wait: millis(50),
            nofile: 0,
            listen: ListenConfig::default(),
            admin: AdminConfig::default(),
            upstream: UpstreamConfig::default(),
            cache: CacheConfig::default(),
            compression: CompressionConfig::default(),
            h2: H2Config::default(),
            forwarded: ForwardedConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            invalidation: None,
        }
    }
}

/// The public listener and what it allows a client.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Port 0 picks a free port (see [`crate::start`]).
    pub address: SocketAddr,
    /// Largest request header block accepted (431 beyond it).
    pub max_header_bytes: ByteSize,
    /// Largest number of request header fields accepted (431 beyond it). Leave room below
    /// the backends' own limit (the API's is 100): the edge adds `X-Forwarded-For`.
    pub max_headers: usize,
    /// The whole request header must arrive within this, counted from the connection's accept
    /// for its first request and from the first byte of each later one (NGINX:
    /// client_header_timeout, but total rather than between two reads). Past it: 408 and close.
    pub header_read_timeout: HumanDuration,
    /// An idle keep-alive connection is closed when no byte of a next request arrives
    /// within this (NGINX: keepalive_timeout).
    pub keepalive_timeout: HumanDuration,
    /// Longest wait for any one read of a request body (NGINX: client_body_timeout).
    pub body_read_timeout: HumanDuration,
    /// Longest wait for any one write to a client that does not read its response (NGINX:
    /// send_timeout).
    pub send_timeout: HumanDuration,
    /// Requests served on one connection before it is closed (0 = no limit).
    pub keepalive_requests: u32,
    /// Each client connection's write buffer. A response whose header and body fit in it
    /// leaves in one write (one syscall, one TCP segment burst) instead of one for the header
    /// and one for the body; Pingora's default (1460 bytes, one MSS) splits any page over
    /// ~1.2 KB in two. Allocated when a connection first writes, filled only as far as the
    /// largest response it sent; larger bodies bypass it.
    pub write_buffer: ByteSize,
    /// Each client connection's read buffer, between the socket and the request parsers.
    /// Pingora's default is 64 KiB, allocated zeroed for every accepted connection: on a cold
    /// start, when a load balancer or the clients open a thousand connections in a second,
    /// zeroing those pages was a quarter of the edge's CPU. A request header fits in a few
    /// hundred bytes; the parsers keep their own buffers, so a small one costs nothing
    /// after. 0 reads straight from the socket.
    pub read_buffer: ByteSize,
    /// HTTPS listeners, besides the plain one at `address`.
    pub tls: Vec<TlsListenerConfig>,
}

/// `listen.read_buffer` unless set.
const READ_BUFFER_DEFAULT: u64 = 4 << 10;

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            address: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_header_bytes: ByteSize(16 << 10),
            max_headers: 96,
            header_read_timeout: secs(10),
            keepalive_timeout: secs(60),
            body_read_timeout: secs(60),
            send_timeout: secs(60),
            keepalive_requests: 0,
            write_buffer: ByteSize(16 << 10),
            read_buffer: ByteSize(READ_BUFFER_DEFAULT),
            tls: Vec::new(),
        }
    }
}

impl ListenConfig {
    fn validate(&self) -> Result<(), EdgeConfigError> {
        positive("listen.header_read_timeout", self.header_read_timeout)?;
        positive("listen.keepalive_timeout", self.keepalive_timeout)?;
        positive("listen.body_read_timeout", self.body_read_timeout)?;
        positive("listen.send_timeout", self.send_timeout)?;
        if self.max_headers == 0 {
            return Err(invalid("listen.max_headers", 0, "must be at least 1"));
        }
        for (key, size) in [
            ("listen.write_buffer", self.write_buffer),
            ("listen.read_buffer", self.read_buffer),
        ] {
            if size.bytes() > 1 << 20 {
                return Err(invalid(
                    key,
                    size,
                    "must be at most 1MiB (it is per connection)",
                ));
            }
        }
        let mut seen = vec![self.address];
        for t in &self.tls {
            t.validate()?;
            if t.address.port() != 0 && seen.contains(&t.address) {
                return Err(invalid(
                    "listen.tls.address",
                    format!("\"{}\"", t.address),
                    "already used by another listener",
                ));
            }
            seen.push(t.address);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Internal listener for `/metrics`, `/healthz`, `/backends` and `/purge`.
    pub address: SocketAddr,
    /// Bearer token for `/purge`; purging is refused while it is empty.
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: String::new(),
        }
    }
}

impl AdminConfig {
    /// The purge token, `None` when unset (purging refused).
    pub fn token(&self) -> Option<&str> {
        Some(self.token.trim()).filter(|t| !t.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM, keep serving in-flight requests this long before stopping.
    pub grace_period: HumanDuration,
    /// Then give the runtimes this long to finish.
    pub graceful_timeout: HumanDuration,
    /// Socket the old and new process use to hand over listeners on `--upgrade`.
    pub upgrade_sock: String,
    pub pid_file: String,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: secs(10),
            graceful_timeout: secs(5),
            upgrade_sock: "/tmp/reviews-edge-upgrade.sock".into(),
            pid_file: "/tmp/reviews-edge.pid".into(),
        }
    }
}

impl EdgeConfig {
    /// Loads a config file (or the defaults when `path` is `None`), applies `REVIEWS_EDGE__…`
    /// environment overrides and then `overrides`, and validates the result.
    pub fn load(path: Option<&Path>, overrides: &[Override]) -> Result<Self, EdgeConfigError> {
        let mut all = shared_config::env_overrides(ENV_PREFIX);
        all.extend_from_slice(overrides);
        let config: EdgeConfig = shared_config::load(path, &all)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates TOML text (tests, embedded configs).
    pub fn from_toml(text: &str) -> Result<Self, EdgeConfigError> {
        let config = Self::from_toml_unvalidated(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without the final checks, for callers that fill in the upstreams
    /// themselves before [`crate::start`] (which validates).
    pub fn from_toml_unvalidated(text: &str) -> Result<Self, EdgeConfigError> {
        toml::from_str(text).map_err(|e| {
            ConfigError::File {
                path: "(inline)".into(),
                message: e.to_string().trim_end().to_owned(),
            }
            .into()
        })
    }

    /// Descriptors this config needs: two per connection plus a margin.
    pub fn nofile_needed(&self) -> u64 {
        self.max_connections as u64 * 2 + FD_MARGIN
    }

    /// RLIMIT_NOFILE to raise to: `nofile`, or what `max_connections` needs when it is 0.
    pub fn nofile(&self) -> u64 {
        if self.nofile == 0 {
            self.nofile_needed()
        } else {
            self.nofile
        }
    }

    /// Checks what must hold before starting, section by section; the error names the key.
    pub fn validate(&self) -> Result<(), EdgeConfigError> {
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid(
                "threads",
                self.threads,
                "must be between 1 and 256",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", 0, "must be at least 1"));
        }
        if self.nofile() < self.nofile_needed() {
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
        self.listen.validate()?;
        self.upstream.validate()?;
        self.cache.validate()?;
        self.compression.validate()?;
        if let Some(inv) = &self.invalidation {
            inv.validate().map_err(|e| EdgeConfigError::Invalid {
                key: e.key,
                value: e.value,
                reason: e.reason,
            })?;
        }
        self.h2.validate()?;
        Ok(())
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
    fn a_bad_address_names_the_key_and_line() {
        let e = EdgeConfig::from_toml("[listen]\naddress = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("address") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn nofile_below_what_max_connections_needs_is_rejected() {
        let text = "max_connections = 10000\nnofile = 1024\n[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n";
        let e = EdgeConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains("nofile") && e.contains("20256"), "{e}");
    }

    #[test]
    fn per_connection_buffers_over_1mib_name_their_key() {
        for key in ["read_buffer", "write_buffer"] {
            let text = format!(
                "[listen]\n{key} = \"2MiB\"\n[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n"
            );
            let e = EdgeConfig::from_toml(&text).unwrap_err().to_string();
            assert!(e.starts_with(&format!("listen.{key}")), "{e}");
        }
        let ok =
            "[listen]\nread_buffer = \"0B\"\n[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n";
        assert_eq!(
            EdgeConfig::from_toml(ok)
                .unwrap()
                .listen
                .read_buffer
                .bytes(),
            0
        );
    }

    #[test]
    fn a_zero_timeout_names_its_key() {
        let text = "[listen]\nheader_read_timeout = \"0s\"\n[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n";
        let e = EdgeConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains("listen.header_read_timeout"), "{e}");
    }

    #[test]
    fn an_invalidation_section_without_a_url_names_the_key() {
        let text =
            "[invalidation]\nstream = \"s\"\n[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n";
        let e = EdgeConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.starts_with("invalidation.url"), "{e}");
        let text = "[invalidation]\nurl = \"redis://127.0.0.1:6379\"\nmax_lenn = 5\n";
        let e = EdgeConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains("max_lenn") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn tls_and_h2_mistakes_name_their_keys() {
        let server = "[[upstream.servers]]\naddress = \"127.0.0.1:1\"\n";
        let tls =
            "[[listen.tls]]\naddress = \"127.0.0.1:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let e = EdgeConfig::from_toml(&format!("{server}{tls}min_version = \"1.1\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_version") && e.contains("1.1"), "{e}");
        let e = EdgeConfig::from_toml(&format!("{server}{tls}alpn = []\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen.tls.alpn"), "{e}");
        let e = EdgeConfig::from_toml(&format!("{server}{tls}alpn = [\"spdy/3\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spdy/3"), "{e}");
        let e = EdgeConfig::from_toml(&format!("{server}{tls}session_cache = 5000000\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("listen.tls.session_cache") && e.contains("5000000"),
            "{e}"
        );
        let e = EdgeConfig::from_toml(&format!("{server}{tls}session_cache = -1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("session_cache"), "{e}");
        let e = EdgeConfig::from_toml(&format!("{server}{tls}session_tickets = 9\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen.tls.session_tickets"), "{e}");
        let e = EdgeConfig::from_toml(&format!("{server}[h2]\nmax_concurrent_streams = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("h2.max_concurrent_streams"), "{e}");
        let e = EdgeConfig::from_toml(&format!(
            "{server}[forwarded]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("trusted_proxies") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        let c = EdgeConfig::from_toml(&format!("{server}{tls}")).unwrap();
        assert_eq!(c.listen.tls[0].alpn, vec![Alpn::H2, Alpn::Http11]);
        assert_eq!(c.listen.tls[0].session_cache, 32_768);
        assert_eq!(c.listen.tls[0].session_tickets, 1);
    }

    #[test]
    fn the_example_config_is_valid_and_prints_back_the_same() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/edge.example.toml"
        ))
        .unwrap();
        let c = EdgeConfig::from_toml(&text).unwrap();
        let again = EdgeConfig::from_toml(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(format!("{c:?}"), format!("{again:?}"));
    }
}
