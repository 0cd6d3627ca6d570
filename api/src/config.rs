//! The API process's configuration: a TOML file (`deploy/api.example.toml`), environment
//! overrides (`REVIEWS_API__DATABASE__URL=…`) and command-line flags, in that order of
//! precedence, checked strictly — an unknown key is an error naming it.
//!
//! Every field is already a typed value (addresses, `HumanDuration`) when the file is read, so
//! one model serves both as file and runtime model; `validate` adds the rules types can't say.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reviews_shared::config::{ConfigError, Override, env_overrides, load};
pub use reviews_shared::logging::{LogConfig, LogFormat};
use reviews_shared::units::HumanDuration;
use serde::{Deserialize, Serialize};

use crate::store::{Backend, DbLimits};

/// The most connections `server.max_connections` may allow (each costs a file descriptor and a
/// task; far more than one process serves well).
const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;

/// Prefix of environment overrides: `REVIEWS_API__SERVER__LISTEN=0.0.0.0:3000`.
pub const ENV_PREFIX: &str = "REVIEWS_API";

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Publish the `Surrogate-Key` tags of successful writes to the edges' shared purge
    /// stream, for writes that reach this process without passing through an edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidation: Option<reviews_shared::invalidation::InvalidationConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The public listener (the edge connects here).
    pub listen: SocketAddr,
    /// The internal listener serving `/metrics`; keep it off the public network.
    pub metrics_listen: SocketAddr,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub shutdown_grace: HumanDuration,
    /// A request head (request line and headers) must arrive whole within this time of its
    /// first byte (of the connection's start, for the first request), or the connection is
    /// closed: a client trickling a header cannot hold a connection.
    pub header_read_timeout: HumanDuration,
    /// How long a connection may stay idle between requests before it is closed. Longer than
    /// the edge's upstream pool timeout (60 s), so the edge closes idle connections first and
    /// never sends a request on one the API is closing.
    pub keepalive_timeout: HumanDuration,
    /// Open connections per listener; a connection beyond it is answered 503 and closed.
    pub max_connections: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
            shutdown_grace: Duration::from_secs(10).into(),
            header_read_timeout: Duration::from_secs(10).into(),
            keepalive_timeout: Duration::from_secs(75).into(),
            max_connections: 4096,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://reviews.db` (the default, a file created on first start) or
    /// `postgres://user@host:5432/db`.
    pub url: String,
    /// Read pool size. SQLite adds one writer connection; PostgreSQL a write pool of up to as
    /// many again (lazy: writes are rare).
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout: HumanDuration,
    /// PostgreSQL `statement_timeout` and `lock_timeout`; SQLite `busy_timeout`.
    pub statement_timeout: HumanDuration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://reviews.db".into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(1).into(),
            statement_timeout: Duration::from_secs(2).into(),
        }
    }
}

impl DatabaseConfig {
    pub fn limits(&self) -> DbLimits {
        DbLimits {
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout.get(),
            statement_timeout: self.statement_timeout.get(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `max-age` of `Cache-Control: public` on list and meta responses: how long the edge
    /// (and browsers) may reuse a page. Writes purge the edge's copies at once.
    pub cache_max_age: HumanDuration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cache_max_age: Duration::from_secs(60).into(),
        }
    }
}

/// Flags of `reviews api`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ApiArgs {
    /// TOML config file (see deploy/api.example.toml). Without one, defaults apply.
    #[arg(long, short = 'c', env = "REVIEWS_API_CONFIG")]
    pub config: Option<PathBuf>,
    /// Public listen address (overrides server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Metrics listen address (overrides server.metrics_listen).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Database URL (overrides database.url).
    #[arg(long, env = "REVIEWS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Validate the configuration, print the effective result and exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigCheckError {
    #[error(transparent)]
    Load(#[from] ConfigError),
    #[error("{key} = {value}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Invalidation(#[from] reviews_shared::invalidation::InvalidConfig),
}

impl ApiArgs {
    /// The effective configuration: file, then environment, then flags.
    pub fn load(&self) -> Result<ApiConfig, ConfigCheckError> {
        let mut overrides = env_overrides(ENV_PREFIX);
        let flags = [
            ("server.listen", &self.listen, "--listen"),
            (
                "server.metrics_listen",
                &self.metrics_listen,
                "--metrics-listen",
            ),
            ("database.url", &self.database_url, "--database-url"),
        ];
        for (key, value, flag) in flags {
            if let Some(v) = value {
                overrides.push(Override::string(key, v.clone(), flag));
            }
        }
        let config: ApiConfig = load(self.config.as_deref(), &overrides)?;
        config.validate()?;
        Ok(config)
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), ConfigCheckError> {
        let invalid =
            |key, value: String, reason| Err(ConfigCheckError::Invalid { key, value, reason });
        for (key, value) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.keepalive_timeout", self.server.keepalive_timeout),
        ] {
            if value.get().is_zero() {
                return invalid(key, value.to_string(), "must be more than 0");
            }
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.server.max_connections) {
            return invalid(
                "server.max_connections",
                self.server.max_connections.to_string(),
                "must be from 1 to 1000000",
            );
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "0".into(), "must be at least 1");
        }
        if self.database.acquire_timeout.get().is_zero() {
            return invalid(
                "database.acquire_timeout",
                self.database.acquire_timeout.to_string(),
                "must be more than 0",
            );
        }
        if self.database.url.trim().is_empty() {
            return invalid("database.url", "\"\"".into(), "must name a database");
        }
        if let Err(e) = Backend::parse(&self.database.url) {
            return invalid(
                "database.url",
                format!("{:?}", e.url),
                "expected postgres://…, postgresql://…, sqlite://…, sqlite:… or a file path",
            );
        }
        if let Some(inv) = &self.invalidation {
            inv.validate()?;
        }
        if self.server.listen == self.server.metrics_listen && self.server.listen.port() != 0 {
            return invalid(
                "server.metrics_listen",
                self.server.metrics_listen.to_string(),
                "must differ from server.listen",
            );
        }
        Ok(())
    }

    /// The configuration as TOML, for `--check`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(inv) = shown.invalidation.as_mut() {
            inv.url = inv.redacted_url();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}
