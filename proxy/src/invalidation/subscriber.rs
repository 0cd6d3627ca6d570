//! Reads the shared purge stream and applies other processes' purges to this edge's cache.
//!
//! One connection, `XREAD BLOCK` from the last id read. On every (re)connection it first
//! checks that the stream still holds that entry: `MAXLEN` trims the oldest entries first, so
//! if it is still there nothing after it was lost. If it is gone (trimmed during a long
//! disconnection, or a Redis restarted without its data), the edge takes the stream's newest
//! id and *then* drops every entry it holds: whatever was missed is covered, and everything
//! published after that id is read. While it cannot read, the entries it stores live at most
//! `invalidation.disconnected_ttl`.
//!
//! After every read (at least once a second) it reports the last id it applied
//! (`reviews_shared::invalidation::readers`): a process waiting for its purge to reach every
//! edge reads these. On shutdown it withdraws, so nobody waits for an edge that is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use reviews_shared::invalidation::{self, Invalidation, InvalidationConfig, Published, readers};

use super::Resume;
use crate::cache::Cache;
use crate::metrics;

/// How long one `XREAD` blocks; the connection's answer timeout is this plus
/// `invalidation.timeout`, so a silent network loss is noticed within both.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries taken per read.
const BATCH: usize = 512;

pub struct Subscriber {
    pub cache: Arc<Cache>,
    pub config: InvalidationConfig,
}

#[async_trait]
impl BackgroundService for Subscriber {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = self.run() => {}
            _ = shutdown.changed() => {}
        }
        self.leave().await;
    }
}

impl Subscriber {
    /// Withdraws this edge from the readers others wait for (best effort: if Redis is away,
    /// its report expires within `readers::READER_SILENCE`).
    async fn leave(&self) {
        let Some(origin) = self.cache.invalidation.origin() else {
            return;
        };
        let gone = async {
            let mut conn = invalidation::connect(&self.config, None).await?;
            readers::leave(&mut conn, &self.config.stream, origin).await
        };
        match tokio::time::timeout(self.config.timeout.get(), gone).await {
            Ok(Ok(())) => tracing::info!("withdrew from the purge stream's readers"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not withdraw from the purge stream's readers")
            }
            Err(_) => tracing::warn!("could not withdraw from the purge stream's readers in time"),
        }
    }

    fn disconnected(&self) {
        metrics::INVALIDATION_CONNECTED.set(0);
        self.cache
            .invalidation
            .set_cap(Some(self.config.disconnected_ttl.get()));
    }

    async fn run(&self) {
        let state = &self.cache.invalidation;
        self.disconnected();
        let mut resume = state.resume();
        let mut failures = 0u32;
        loop {
            let attempt = async {
                let mut conn =
                    invalidation::connect(&self.config, Some(BLOCK + self.config.timeout.get()))
                        .await?;
                let from = self.catch_up(&mut conn, &resume).await?;
                Ok::<_, redis::RedisError>((conn, from))
            };
            let (mut conn, from) = match attempt.await {
                Ok(c) => c,
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e, url = %self.config.redacted_url(),
                            cap = %self.config.disconnected_ttl,
                            "cannot read the shared purge stream; entries now live at most invalidation.disconnected_ttl");
                    }
                    tokio::time::sleep(self.config.backoff(failures)).await;
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            state.set_position(&from);
            metrics::INVALIDATION_CONNECTED.set(1);
            state.set_cap(None);
            tracing::info!(stream = %self.config.stream, from = %from, "reading the shared purge stream");
            failures = 0;
            let e = self.follow(&mut conn, from).await;
            self.disconnected();
            tracing::warn!(error = %e, cap = %self.config.disconnected_ttl,
                "lost the shared purge stream; reconnecting (entries now live at most invalidation.disconnected_ttl)");
            resume = Resume::After(state.position().unwrap_or_else(|| "0-0".into()));
        }
    }

    /// Where to read from after connecting, dropping the cache when purges may have been lost.
    async fn catch_up(
        &self,
        conn: &mut MultiplexedConnection,
        resume: &Resume,
    ) -> redis::RedisResult<String> {
        let stream = &self.config.stream;
        let lost = match resume {
            Resume::Newest => false,
            Resume::Unknown => true,
            Resume::After(id) if id == "0-0" => trimmed_since_empty(conn, stream).await?,
            Resume::After(id) => {
                let r: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(id)
                    .arg(id)
                    .query_async(conn)
                    .await?;
                r.ids.is_empty()
            }
        };
        let from = match resume {
            Resume::After(id) if !lost => id.clone(),
            _ => newest_id(conn, stream).await?,
        };
        if lost {
            // After reading the newest id: a purge published in between is read, not lost.
            self.cache.drop_everything();
            metrics::INVALIDATION_APPLIED
                .with_label_values(&["gap"])
                .inc();
            tracing::warn!(resume = ?resume, "the purge stream no longer holds what this edge missed: dropped every cached entry");
        }
        Ok(from)
    }

    /// Reads and applies until the connection fails; returns why.
    async fn follow(
        &self,
        conn: &mut MultiplexedConnection,
        mut from: String,
    ) -> redis::RedisError {
        let mine = self.cache.invalidation.origin().map(str::to_owned);
        // Counted among the readers from the start, not after the first read's wait.
        if let Some(origin) = &mine
            && let Err(e) = readers::report(conn, &self.config.stream, origin, &from).await
        {
            return e;
        }
        loop {
            let read: Option<StreamReadReply> = match redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.config.stream)
                .arg(&from)
                .query_async(conn)
                .await
            {
                Ok(r) => r,
                Err(e) => return e,
            };
            for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                metrics::INVALIDATION_RECEIVED.inc();
                if let Some(p) = Published::parse(&entry)
                    && mine.as_deref() != Some(p.origin.as_str())
                {
                    self.apply(&p);
                }
                from = entry.id;
            }
            self.cache.invalidation.set_position(&from);
            // Applied (or nothing new within BLOCK): say so, which also says alive.
            if let Some(origin) = &mine
                && let Err(e) = readers::report(conn, &self.config.stream, origin, &from).await
            {
                return e;
            }
        }
    }

    fn apply(&self, p: &Published) {
        let kind = match &p.what {
            Invalidation::Tags(_) => "tags",
            Invalidation::Key(_) => "key",
            Invalidation::All => "all",
        };
        self.cache.apply_shared(&p.what);
        metrics::INVALIDATION_APPLIED
            .with_label_values(&[kind])
            .inc();
        if p.at_ms > 0 {
            let lag_ms = invalidation::now_ms().saturating_sub(p.at_ms);
            metrics::INVALIDATION_LAG.observe(lag_ms as f64 / 1000.0);
        }
    }
}

/// The id of the stream's newest entry, `0-0` when it is empty or missing.
async fn newest_id(conn: &mut MultiplexedConnection, stream: &str) -> redis::RedisResult<String> {
    let r: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(r.ids
        .into_iter()
        .next()
        .map_or_else(|| "0-0".into(), |e| e.id))
}

/// Whether entries were trimmed from a stream this edge found empty and read nothing of
/// since (`max-deleted-entry-id`, Redis 7; a missing stream lost nothing this edge saw).
async fn trimmed_since_empty(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<bool> {
    let exists: bool = redis::cmd("EXISTS").arg(stream).query_async(conn).await?;
    if !exists {
        return Ok(false);
    }
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await?;
    let deleted = match info.get("max-deleted-entry-id") {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => return Ok(false),
    };
    Ok(deleted != "0-0")
}
