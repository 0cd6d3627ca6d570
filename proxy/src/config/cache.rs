//! `[cache]`, its `[[cache.routes]]` and `[compression]`: what is stored, for how long, under
//! which key, and in which encodings.

use std::collections::BTreeMap;
use std::time::Duration;

use reviews_shared::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};

use super::{EdgeConfigError, invalid, secs};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
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
    /// Where the cache is written when the edge stops (SIGTERM) and read when it starts, so a
    /// restart does not start cold. Unset: not kept across restarts. (A zero-downtime reload
    /// hands the cache over whether this is set or not.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_path: Option<std::path::PathBuf>,
    /// Longest time writing a snapshot may take; entries not written by then are left out.
    pub snapshot_timeout: HumanDuration,
    /// Routes whose GET/HEAD responses may be cached. Nothing else is.
    pub routes: Vec<RouteRule>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_size: ByteSize(256 << 20),
            max_object_size: ByteSize(1 << 20),
            default_ttl: secs(60),
            stale_while_revalidate: secs(10),
            stale_if_error: secs(300),
            lock_timeout: secs(2),
            snapshot_path: None,
            snapshot_timeout: secs(10),
            routes: Vec::new(),
        }
    }
}

impl CacheConfig {
    pub fn max_object_bytes(&self) -> usize {
        self.max_object_size.bytes() as usize
    }

    pub(super) fn validate(&self) -> Result<(), EdgeConfigError> {
        super::positive("cache.snapshot_timeout", self.snapshot_timeout)?;
        let max_object = self.max_object_size.bytes();
        if max_object > u64::from(u32::MAX / 4) {
            return Err(invalid(
                "cache.max_object_size",
                self.max_object_size,
                "must be below 1GiB",
            ));
        }
        if self.enabled && max_object >= self.max_size.bytes() {
            return Err(invalid(
                "cache.max_object_size",
                self.max_object_size,
                "must be smaller than cache.max_size",
            ));
        }
        Ok(())
    }
}

/// Which requests of a path may be cached and which query parameters make up their key.
/// Written as `path = "/reviews"` (exact) or `path = "/static/*"` (prefix).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RouteFile", into = "RouteFile")]
pub struct RouteRule {
    /// Exact path, or a prefix when `prefix` is set.
    pub path: String,
    pub prefix: bool,
    /// Parameters in the key; `None` keeps all of them.
    pub params: Option<Vec<String>>,
    /// Parameters equal to these values are left out of the key.
    pub defaults: BTreeMap<String, String>,
    /// Freshness for this route when the origin sends none (overrides `cache.default_ttl`).
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

    /// Whether `name` is part of this route's key.
    pub fn keys_on(&self, name: &str) -> bool {
        self.params
            .as_ref()
            .is_none_or(|p| p.iter().any(|k| k == name))
    }

    /// The label of the route in metrics: the path, with `*` for a prefix.
    pub fn label(&self) -> String {
        if self.prefix {
            format!("{}*", self.path)
        } else {
            self.path.clone()
        }
    }
}

/// A route as written in the file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    path: String,
    /// Query parameters that are part of the cache key; absent means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<Vec<String>>,
    /// A parameter equal to its default here is left out of the key, so `?product_id=2` and
    /// `?product_id=2&page=1` share an entry when `page = "1"` is listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    defaults: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<HumanDuration>,
}

impl TryFrom<RouteFile> for RouteRule {
    type Error = String;

    fn try_from(r: RouteFile) -> Result<Self, String> {
        if !r.path.starts_with('/') {
            return Err(format!(
                "cache.routes.path = {:?}: must start with '/'",
                r.path
            ));
        }
        let (path, prefix) = match r.path.strip_suffix('*') {
            Some(p) => (p.to_owned(), true),
            None => (r.path.clone(), false),
        };
        if path.contains('*') {
            return Err(format!(
                "cache.routes.path = {:?}: '*' is only allowed at the end",
                r.path
            ));
        }
        Ok(RouteRule {
            path,
            prefix,
            params: r.params,
            defaults: r.defaults,
            ttl: r.ttl.map(HumanDuration::get),
        })
    }
}

impl From<RouteRule> for RouteFile {
    fn from(r: RouteRule) -> Self {
        RouteFile {
            path: r.label(),
            params: r.params,
            defaults: r.defaults,
            ttl: r.ttl.map(HumanDuration),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingName {
    Br,
    Gzip,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    pub enabled: bool,
    /// Bodies smaller than this are sent as they are.
    pub min_size: ByteSize,
    /// Encodings stored next to the identity body, in order of preference.
    pub encodings: Vec<EncodingName>,
    pub gzip_level: u32,
    pub brotli_quality: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            min_size: ByteSize(1024),
            encodings: vec![EncodingName::Gzip],
            gzip_level: 6,
            brotli_quality: 5,
        }
    }
}

impl CompressionConfig {
    pub fn min_bytes(&self) -> usize {
        self.min_size.bytes() as usize
    }

    pub(super) fn validate(&self) -> Result<(), EdgeConfigError> {
        if self.gzip_level > 9 {
            return Err(invalid(
                "compression.gzip_level",
                self.gzip_level,
                "must be 0..=9",
            ));
        }
        if self.brotli_quality > 11 {
            return Err(invalid(
                "compression.brotli_quality",
                self.brotli_quality,
                "must be 0..=11",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_routes_end_in_a_star() {
        let c: CacheConfig = toml::from_str("[[routes]]\npath = \"/static/*\"\n").unwrap();
        assert!(c.routes[0].prefix && c.routes[0].matches("/static/a.css"));
        assert_eq!(c.routes[0].label(), "/static/*");
    }

    #[test]
    fn a_star_inside_a_route_path_is_refused() {
        let e = toml::from_str::<CacheConfig>("[[routes]]\npath = \"/a*/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only allowed at the end"), "{e}");
    }
}
