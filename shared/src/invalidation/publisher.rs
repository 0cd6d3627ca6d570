//! Publishing without ever holding up a request: [`Publisher::publish`] puts the entry in a
//! bounded outbox and returns; one task ([`PublishTask::run`]) appends the outbox to the
//! stream. While Redis is unreachable the outbox fills; past its size a purge is dropped and
//! counted, and the task publishes a purge of everything once it reconnects, since the edges
//! can no longer be told exactly what changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::config::InvalidationConfig;
use super::entry::{Invalidation, Published, now_ms};

/// How often an idle publisher checks its connection, so its gauge tells the truth.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The counters a publisher keeps; each role registers them under its own names.
#[derive(Clone)]
pub struct PublishMetrics {
    pub published: IntCounter,
    pub dropped: IntCounter,
    /// 1 while connected to Redis, else 0.
    pub connected: IntGauge,
}

/// The handle requests publish through (cheap to clone).
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Published>,
    origin: Arc<str>,
    overflowed: Arc<AtomicBool>,
    dropped: IntCounter,
}

/// The task that writes the outbox to the stream; run it on the role's runtime.
pub struct PublishTask {
    rx: mpsc::Receiver<Published>,
    config: InvalidationConfig,
    overflowed: Arc<AtomicBool>,
    metrics: PublishMetrics,
    origin: Arc<str>,
}

impl Publisher {
    pub fn new(
        config: &InvalidationConfig,
        origin: &str,
        metrics: PublishMetrics,
    ) -> (Publisher, PublishTask) {
        let (tx, rx) = mpsc::channel(config.outbox.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        metrics.connected.set(0);
        (
            Publisher {
                tx,
                origin: origin.into(),
                overflowed: overflowed.clone(),
                dropped: metrics.dropped.clone(),
            },
            PublishTask {
                rx,
                config: config.clone(),
                overflowed,
                metrics,
                origin: origin.into(),
            },
        )
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Queues `what` for the stream; never waits.
    pub fn publish(&self, what: Invalidation) {
        let entry = Published {
            origin: self.origin.to_string(),
            what,
            at_ms: now_ms(),
        };
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
            if !self.overflowed.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    "the purge outbox is full (Redis unreachable?): dropping purges; \
                     everything will be purged on reconnect"
                );
            }
        }
    }
}

/// A connection to the configured Redis, with the configured timeouts for connecting and for
/// each answer (`response` overrides the latter, for blocking reads).
pub async fn connect(
    config: &InvalidationConfig,
    response: Option<Duration>,
) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(config.url.as_str())?;
    let t = config.timeout.get();
    let conf = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(t))
        .set_response_timeout(Some(response.unwrap_or(t)));
    client
        .get_multiplexed_async_connection_with_config(&conf)
        .await
}

/// `XADD stream MAXLEN ~ max_len * field value …`.
async fn append(
    conn: &mut MultiplexedConnection,
    config: &InvalidationConfig,
    entry: &Published,
) -> redis::RedisResult<()> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&config.stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(config.max_len)
        .arg("*");
    for (k, v) in entry.fields() {
        cmd.arg(k).arg(v);
    }
    cmd.query_async::<String>(conn).await.map(|_| ())
}

impl PublishTask {
    /// Publishes until every [`Publisher`] is dropped, reconnecting with backoff.
    pub async fn run(mut self) {
        // An entry taken from the outbox but not written yet: written first after reconnecting.
        let mut held: Option<Published> = None;
        let mut failures = 0u32;
        loop {
            let mut conn = match connect(&self.config, None).await {
                Ok(c) => c,
                Err(e) => {
                    self.metrics.connected.set(0);
                    if failures == 0 {
                        tracing::warn!(error = %e, url = %self.config.redacted_url(), "cannot reach Redis to publish purges; retrying");
                    }
                    tokio::time::sleep(self.config.backoff(failures)).await;
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            self.metrics.connected.set(1);
            if failures > 0 {
                tracing::info!(url = %self.config.redacted_url(), "publishing purges again");
            }
            failures = 0;
            match self.serve(&mut conn, &mut held).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.connected.set(0);
                    tracing::warn!(error = %e, "lost Redis while publishing purges; reconnecting");
                }
            }
        }
    }

    /// Writes the outbox on one connection; `Ok` when the publishers are gone.
    async fn serve(
        &mut self,
        conn: &mut MultiplexedConnection,
        held: &mut Option<Published>,
    ) -> redis::RedisResult<()> {
        loop {
            if self.overflowed.swap(false, Ordering::SeqCst) {
                let all = Published {
                    origin: self.origin.to_string(),
                    what: Invalidation::All,
                    at_ms: now_ms(),
                };
                if let Err(e) = append(conn, &self.config, &all).await {
                    self.overflowed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
                self.metrics.published.inc();
            }
            let next = match held.take() {
                Some(e) => e,
                None => match tokio::time::timeout(PING_EVERY, self.rx.recv()).await {
                    Ok(Some(e)) => e,
                    Ok(None) => return Ok(()),
                    Err(_) => {
                        redis::cmd("PING").query_async::<String>(conn).await?;
                        continue;
                    }
                },
            };
            if let Err(e) = append(conn, &self.config, &next).await {
                *held = Some(next);
                return Err(e);
            }
            self.metrics.published.inc();
        }
    }
}
