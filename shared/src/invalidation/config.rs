//! The `[invalidation]` section, the same in the edge's and the API's config. Absent, a
//! process shares nothing (one edge purging its own cache: `reviews up` needs no Redis).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvalidationConfig {
    /// `redis://host:6379` (`redis://:password@host:6379/0` with a password; put that in the
    /// environment, not the file).
    pub url: String,
    /// The stream every edge and API process of one deployment shares.
    pub stream: String,
    /// Entries the stream keeps (trimmed approximately, `XADD MAXLEN ~`). An edge
    /// disconnected for longer than it takes to publish this many drops its whole cache
    /// when it reconnects.
    pub max_len: u64,
    /// Purges waiting to be published while Redis is slow or unreachable. Beyond it a purge
    /// is dropped and counted, and a purge of everything is published on reconnecting
    /// instead: a request never waits for Redis.
    pub outbox: usize,
    /// Edges only: while an edge cannot read the stream, entries it stores live at most this
    /// long (fresh and stale windows alike), bounding what a missed purge can leave stale.
    pub disconnected_ttl: HumanDuration,
    /// First wait before reconnecting; doubles after each failure up to `reconnect_max`.
    pub reconnect_min: HumanDuration,
    pub reconnect_max: HumanDuration,
    /// Connecting, and any command besides the blocking read, give up after this.
    pub timeout: HumanDuration,
    /// A successful write's answer waits until every live edge has applied its purge, at
    /// most this long, so the next read through any edge sees the write. "0s" answers at
    /// once and lets the other edges catch up within a few milliseconds. Never waited for
    /// while Redis is unreachable.
    pub confirm_timeout: HumanDuration,
}

impl Default for InvalidationConfig {
    fn default() -> Self {
        InvalidationConfig {
            url: String::new(),
            stream: "reviews:purges".into(),
            max_len: 100_000,
            outbox: 10_000,
            disconnected_ttl: HumanDuration(Duration::from_secs(5)),
            reconnect_min: HumanDuration(Duration::from_millis(100)),
            reconnect_max: HumanDuration(Duration::from_secs(5)),
            timeout: HumanDuration(Duration::from_secs(1)),
            confirm_timeout: HumanDuration(Duration::from_millis(500)),
        }
    }
}

/// A bad value, naming its key (`invalidation.url`).
#[derive(Debug, thiserror::Error)]
#[error("{key} = {value}: {reason}")]
pub struct InvalidConfig {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl InvalidationConfig {
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |key, value: &dyn std::fmt::Display, reason: &str| {
            Err(InvalidConfig {
                key,
                value: value.to_string(),
                reason: reason.into(),
            })
        };
        if self.url.trim().is_empty() {
            return bad(
                "invalidation.url",
                &"\"\"",
                "must name the Redis server, e.g. redis://10.0.0.5:6379",
            );
        }
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return bad(
                "invalidation.url",
                &format!("{:?}", self.redacted_url()),
                &format!("not a Redis URL ({e})"),
            );
        }
        if self.stream.trim().is_empty() {
            return bad("invalidation.stream", &"\"\"", "must name a stream");
        }
        if self.max_len < 100 {
            return bad(
                "invalidation.max_len",
                &self.max_len,
                "must be at least 100",
            );
        }
        if self.outbox == 0 {
            return bad("invalidation.outbox", &0, "must be at least 1");
        }
        for (key, d) in [
            ("invalidation.disconnected_ttl", self.disconnected_ttl),
            ("invalidation.reconnect_min", self.reconnect_min),
            ("invalidation.timeout", self.timeout),
        ] {
            if d.get().is_zero() {
                return bad(key, &"\"0s\"", "must be greater than zero");
            }
        }
        if self.confirm_timeout.get() > Duration::from_secs(10) {
            return bad(
                "invalidation.confirm_timeout",
                &self.confirm_timeout,
                "must be at most 10s: it holds a write's answer",
            );
        }
        if self.reconnect_max.get() < self.reconnect_min.get() {
            return bad(
                "invalidation.reconnect_max",
                &self.reconnect_max,
                "must not be below invalidation.reconnect_min",
            );
        }
        Ok(())
    }

    /// The URL with any password replaced, for logs and `--check`.
    pub fn redacted_url(&self) -> String {
        match self.url.split_once('@') {
            Some((creds, host)) if creds.contains(':') => {
                let scheme = creds.split("//").next().unwrap_or("redis:");
                format!("{scheme}//(credentials)@{host}")
            }
            _ => self.url.clone(),
        }
    }

    /// The wait before reconnect attempt `n` (0-based): exponential, capped.
    pub fn backoff(&self, n: u32) -> Duration {
        let d = self.reconnect_min.get().saturating_mul(1 << n.min(16));
        d.min(self.reconnect_max.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> InvalidationConfig {
        InvalidationConfig {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_or_malformed_url_names_the_key() {
        let e = with_url("").validate().unwrap_err().to_string();
        assert!(e.starts_with("invalidation.url"), "{e}");
        let e = with_url("http://x").validate().unwrap_err().to_string();
        assert!(e.starts_with("invalidation.url"), "{e}");
        with_url("redis://127.0.0.1:6379").validate().unwrap();
    }

    #[test]
    fn a_confirmation_wait_longer_than_ten_seconds_names_the_key() {
        let mut c = with_url("redis://h:1");
        c.confirm_timeout = HumanDuration(Duration::from_secs(11));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("invalidation.confirm_timeout"), "{e}");
        c.confirm_timeout = HumanDuration(Duration::ZERO);
        c.validate().unwrap();
    }

    #[test]
    fn a_password_never_shows() {
        let c = with_url("redis://:secret@10.0.0.5:6379");
        assert!(!c.redacted_url().contains("secret"));
        assert_eq!(with_url("redis://h:1").redacted_url(), "redis://h:1");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = with_url("redis://h:1");
        assert_eq!(c.backoff(0), Duration::from_millis(100));
        assert_eq!(c.backoff(1), Duration::from_millis(200));
        assert_eq!(c.backoff(40), Duration::from_secs(5));
    }
}
