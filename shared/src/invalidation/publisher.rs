//! Publishing never holds a request up on Redis: [`Publisher::publish_confirmed`] puts the
//! entry in a bounded outbox; one task ([`PublishTask::run`]) appends the outbox to the
//! stream. While Redis is unreachable the outbox fills; past its size a purge is dropped and
//! counted, and the task publishes a purge of everything once it reconnects, since the edges
//! can no longer be told exactly what changed.
//!
//! After queueing, the caller waits, bounded by `invalidation.confirm_timeout`, until every
//! live edge has applied the purge ([`super::confirm`]). While Redis is known to be away it
//! does not wait at all: the edges then bound staleness themselves
//! (`invalidation.disconnected_ttl`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};

use super::config::InvalidationConfig;
use super::confirm::Confirmer;
use super::entry::{Invalidation, Published, now_ms};
use super::readers::StreamPos;

/// How often an idle publisher checks its connection, so its gauge tells the truth.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The counters a publisher keeps; each role registers them under its own names.
#[derive(Clone)]
pub struct PublishMetrics {
    pub published: IntCounter,
    pub dropped: IntCounter,
    /// 1 while connected to Redis, else 0.
    pub connected: IntGauge,
    /// Confirmed publishes by outcome (the labels of [`Confirmation::label`]).
    pub confirmations: IntCounterVec,
    /// How long confirmed publishes waited.
    pub confirm_seconds: Histogram,
}

/// How a confirmed publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Every live edge has applied it.
    Applied,
    /// `invalidation.confirm_timeout` passed first (an edge slow or silent, Redis slow).
    TimedOut,
    /// Redis was away or the outbox full: published when it can be, not waited for.
    Unconnected,
    /// `confirm_timeout = "0s"`: published without waiting.
    Off,
}

impl Confirmation {
    pub fn label(self) -> &'static str {
        match self {
            Confirmation::Applied => "applied",
            Confirmation::TimedOut => "timeout",
            Confirmation::Unconnected => "unconnected",
            Confirmation::Off => "off",
        }
    }
}

/// An outbox entry, with where to send its stream id when someone waits for it.
type Outgoing = (Published, Option<oneshot::Sender<StreamPos>>);

/// The handle requests publish through (cheap to clone).
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Outgoing>,
    origin: Arc<str>,
    overflowed: Arc<AtomicBool>,
    /// Whether the task's connection is up: a confirmed publish does not wait without it.
    connected: Arc<AtomicBool>,
    dropped: IntCounter,
    confirmer: Confirmer,
    confirm_timeout: Duration,
    confirmations: IntCounterVec,
    confirm_seconds: Histogram,
}

/// The task that writes the outbox to the stream; run it on the role's runtime.
pub struct PublishTask {
    rx: mpsc::Receiver<Outgoing>,
    config: InvalidationConfig,
    overflowed: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    metrics: PublishMetrics,
    origin: Arc<str>,
    confirmer: Confirmer,
}

impl Publisher {
    pub fn new(
        config: &InvalidationConfig,
        origin: &str,
        metrics: PublishMetrics,
    ) -> (Publisher, PublishTask) {
        let (tx, rx) = mpsc::channel(config.outbox.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let origin: Arc<str> = origin.into();
        let confirmer = Confirmer::new(config, origin.clone());
        metrics.connected.set(0);
        (
            Publisher {
                tx,
                origin: origin.clone(),
                overflowed: overflowed.clone(),
                connected: connected.clone(),
                dropped: metrics.dropped.clone(),
                confirmer: confirmer.clone(),
                confirm_timeout: config.confirm_timeout.get(),
                confirmations: metrics.confirmations.clone(),
                confirm_seconds: metrics.confirm_seconds.clone(),
            },
            PublishTask {
                rx,
                config: config.clone(),
                overflowed,
                connected,
                metrics,
                origin,
                confirmer,
            },
        )
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Queues `what` and waits until every live edge other than this process has applied
    /// it, at most `invalidation.confirm_timeout`; never waits while Redis is away.
    pub async fn publish_confirmed(&self, what: Invalidation) -> Confirmation {
        if self.confirm_timeout.is_zero() {
            self.queue(what, None);
            return Confirmation::Off;
        }
        if !self.connected.load(Ordering::Relaxed) {
            self.queue(what, None);
            return self.count(Confirmation::Unconnected, None);
        }
        let (tx, rx) = oneshot::channel();
        if !self.queue(what, Some(tx)) {
            return self.count(Confirmation::Unconnected, None);
        }
        let started = tokio::time::Instant::now();
        let wait = async {
            // The task drops the sender if it cannot append: then nothing is waited for.
            let Ok(pos) = rx.await else {
                return Confirmation::Unconnected;
            };
            self.confirmer.applied(pos).await;
            Confirmation::Applied
        };
        let outcome = tokio::time::timeout(self.confirm_timeout, wait)
            .await
            .unwrap_or(Confirmation::TimedOut);
        self.count(outcome, Some(started.elapsed()))
    }

    fn count(&self, c: Confirmation, waited: Option<Duration>) -> Confirmation {
        self.confirmations.with_label_values(&[c.label()]).inc();
        if let Some(w) = waited {
            self.confirm_seconds.observe(w.as_secs_f64());
        }
        c
    }

    /// Whether the entry went into the outbox.
    fn queue(&self, what: Invalidation, id: Option<oneshot::Sender<StreamPos>>) -> bool {
        let entry = Published {
            origin: self.origin.to_string(),
            what,
            at_ms: now_ms(),
        };
        let queued = self.tx.try_send((entry, id)).is_ok();
        if !queued {
            self.dropped.inc();
            if !self.overflowed.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    "the purge outbox is full (Redis unreachable?): dropping purges; \
                     everything will be purged on reconnect"
                );
            }
        }
        queued
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

/// `XADD stream MAXLEN ~ max_len * field value …`; returns the entry's id.
async fn append(
    conn: &mut MultiplexedConnection,
    config: &InvalidationConfig,
    entry: &Published,
) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&config.stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(config.max_len)
        .arg("*");
    for (k, v) in entry.fields() {
        cmd.arg(k).arg(v);
    }
    cmd.query_async::<String>(conn).await
}

impl PublishTask {
    /// Publishes until every [`Publisher`] is dropped, reconnecting with backoff; confirms
    /// alongside.
    pub async fn run(self) {
        let confirmer = self.confirmer.clone();
        tokio::select! {
            () = self.publish() => {}
            () = confirmer.run() => {}
        }
    }

    async fn publish(mut self) {
        // An entry taken from the outbox but not written yet: written first after reconnecting.
        let mut held: Option<Outgoing> = None;
        let mut failures = 0u32;
        loop {
            let mut conn = match connect(&self.config, None).await {
                Ok(c) => c,
                Err(e) => {
                    self.set_connected(false);
                    if failures == 0 {
                        tracing::warn!(error = %e, url = %self.config.redacted_url(), "cannot reach Redis to publish purges; retrying");
                    }
                    tokio::time::sleep(self.config.backoff(failures)).await;
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            self.set_connected(true);
            if failures > 0 {
                tracing::info!(url = %self.config.redacted_url(), "publishing purges again");
            }
            failures = 0;
            match self.serve(&mut conn, &mut held).await {
                Ok(()) => return,
                Err(e) => {
                    self.set_connected(false);
                    tracing::warn!(error = %e, "lost Redis while publishing purges; reconnecting");
                }
            }
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.metrics.connected.set(i64::from(up));
    }

    /// Writes the outbox on one connection; `Ok` when the publishers are gone.
    async fn serve(
        &mut self,
        conn: &mut MultiplexedConnection,
        held: &mut Option<Outgoing>,
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
            let (entry, id_to) = match held.take() {
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
            match append(conn, &self.config, &entry).await {
                Ok(id) => {
                    if let (Some(to), Some(pos)) = (id_to, StreamPos::parse(&id)) {
                        let _ = to.send(pos);
                    }
                }
                Err(e) => {
                    // Whoever waits for it stops waiting: it is published on reconnecting.
                    *held = Some((entry, None));
                    return Err(e);
                }
            }
            self.metrics.published.inc();
        }
    }
}
