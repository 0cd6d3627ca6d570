//! Recording results while a run is going: HDR histograms and counters in shards, one per
//! thread (by a thread-local index), merged once at the end. Each worker thread records into
//! its own shard, so recording costs an uncontended lock and a few increments.
//!
//! Three latencies per response, in microseconds:
//! - **scheduled**: from the scheduled start to the last body byte (coordinated omission
//!   corrected: a request the tester had to hold back is charged the wait);
//! - **sent**: from the actual send to the last body byte (what a closed-loop tool reports);
//! - **lag**: from the scheduled start to the actual send (how far the tester fell behind).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::{ErrorKind, Outcome};

/// A request counts as late when it went out more than this after its scheduled time.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

const SHARDS: usize = 16;
const KINDS: usize = ErrorKind::ALL.len();

/// One finished request, with times as offsets from the run's start.
#[derive(Debug)]
pub struct Completed {
    pub endpoint: usize,
    pub scheduled: Duration,
    pub sent: Duration,
    pub done: Duration,
    pub outcome: Outcome,
}

/// Counters readable while the run goes, for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub completed: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// The run's recorder, shared by every request task.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Option<Box<Shard>>>>,
    endpoints: usize,
    pub live: Live,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

impl Recorder {
    pub fn new(endpoints: usize) -> Self {
        Recorder {
            shards: (0..SHARDS).map(|_| Mutex::new(None)).collect(),
            endpoints,
            live: Live::default(),
        }
    }

    fn with_shard(&self, f: impl FnOnce(&mut Shard)) {
        let index = SHARD.with(|s| *s);
        let mut guard = self.shards[index].lock().expect("recorder shard lock");
        f(guard.get_or_insert_with(|| Box::new(Shard::new(self.endpoints))));
    }

    pub fn record(&self, c: Completed) {
        let failed = match &c.outcome {
            Outcome::Response { status, .. } => *status >= 400,
            Outcome::Failed { .. } => true,
        };
        self.live.completed.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.live.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.live.ok.fetch_add(1, Ordering::Relaxed);
        }
        self.with_shard(|shard| shard.record(c, failed));
    }

    /// A request that was due but not sent because too many were already in flight.
    pub fn dropped(&self, endpoint: usize, scheduled: Duration) {
        self.live.dropped.fetch_add(1, Ordering::Relaxed);
        self.with_shard(|shard| {
            shard.requests += 1;
            shard.errors[ErrorKind::Dropped.index()] += 1;
            shard.endpoints[endpoint].requests += 1;
            shard.endpoints[endpoint].failed += 1;
            let second = shard.second(scheduled);
            second.requests += 1;
            second.dropped += 1;
        });
    }

    /// Takes and merges the shards. Call once every request task has recorded.
    pub fn finish(&self) -> Measurements {
        let mut total = Shard::new(self.endpoints);
        for shard in &self.shards {
            if let Some(shard) = shard.lock().expect("recorder shard lock").take() {
                total.merge(*shard);
            }
        }
        Measurements { total }
    }
}

/// Counts for one endpoint of the mix.
#[derive(Debug, Clone)]
pub struct EndpointCounts {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Scheduled latency of its responses, µs.
    pub latency: Histogram<u64>,
}

/// One second of the timeline, keyed by scheduled second (requests, outcomes, latency) except
/// `completed`, which counts responses by the second they finished: the achieved rate.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub dropped: u64,
    pub completed: u64,
    /// Scheduled latency of this second's responses, µs; two significant figures keep an hour
    /// of seconds small.
    pub latency: Option<Histogram<u64>>,
}

/// Everything recorded; shards have the same shape as the merged total.
#[derive(Debug, Clone)]
pub struct Shard {
    pub scheduled: Histogram<u64>,
    pub sent: Histogram<u64>,
    pub lag: Histogram<u64>,
    /// Every scheduled request, dropped ones included.
    pub requests: u64,
    pub ok: u64,
    pub errors: [u64; KINDS],
    /// The first error message of each kind, so a report can say what "other" was.
    pub first_error: [Option<String>; KINDS],
    pub status: BTreeMap<u16, u64>,
    pub bytes: u64,
    pub late: u64,
    pub seconds: Vec<Second>,
    pub endpoints: Vec<EndpointCounts>,
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    // Auto-resizing from a small range: memory grows only as far as the latencies do.
    Histogram::new(sigfig).expect("valid histogram precision")
}

/// Latencies above an hour are recorded as an hour: it bounds how far a histogram can grow.
const MAX_MICROS: u64 = 3_600_000_000;

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(MAX_MICROS)) as u64
}

/// Records into an auto-resizing histogram. (`saturating_record` would clamp to the current
/// size instead of growing, silently flattening every slow response.)
fn put(h: &mut Histogram<u64>, micros: u64) {
    h.record(micros)
        .expect("an auto-resizing histogram grows to an hour");
}

impl Shard {
    fn new(endpoints: usize) -> Self {
        Shard {
            scheduled: histogram(3),
            sent: histogram(3),
            lag: histogram(3),
            requests: 0,
            ok: 0,
            errors: [0; KINDS],
            first_error: Default::default(),
            status: BTreeMap::new(),
            bytes: 0,
            late: 0,
            seconds: Vec::new(),
            endpoints: (0..endpoints)
                .map(|_| EndpointCounts {
                    requests: 0,
                    ok: 0,
                    failed: 0,
                    latency: histogram(3),
                })
                .collect(),
        }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let index = at.as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        &mut self.seconds[index]
    }

    fn record(&mut self, c: Completed, failed: bool) {
        self.requests += 1;
        let lag = c.sent.saturating_sub(c.scheduled);
        put(&mut self.lag, micros(lag));
        if lag > LATE_AFTER {
            self.late += 1;
        }
        let endpoint = &mut self.endpoints[c.endpoint];
        endpoint.requests += 1;
        if failed {
            endpoint.failed += 1;
        } else {
            endpoint.ok += 1;
        }
        self.second(c.done).completed += 1;
        let scheduled_us = micros(c.done.saturating_sub(c.scheduled));
        match c.outcome {
            Outcome::Response { status, bytes } => {
                // Latency counts every response, error statuses included: a fast 500 is a
                // response the user waited for. Transport failures have no response to time.
                put(&mut self.scheduled, scheduled_us);
                put(&mut self.sent, micros(c.done.saturating_sub(c.sent)));
                put(&mut self.endpoints[c.endpoint].latency, scheduled_us);
                *self.status.entry(status).or_insert(0) += 1;
                self.bytes += bytes;
                if failed {
                    self.errors[ErrorKind::Status.index()] += 1;
                    self.first_error[ErrorKind::Status.index()]
                        .get_or_insert_with(|| format!("HTTP {status}"));
                } else {
                    self.ok += 1;
                }
                let second = self.second(c.scheduled);
                put(
                    second.latency.get_or_insert_with(|| histogram(2)),
                    scheduled_us,
                );
            }
            Outcome::Failed { kind, detail } => {
                self.errors[kind.index()] += 1;
                self.first_error[kind.index()].get_or_insert(detail);
            }
        }
        let second = self.second(c.scheduled);
        second.requests += 1;
        if failed {
            second.failed += 1;
        } else {
            second.ok += 1;
        }
    }

    fn merge(&mut self, other: Shard) {
        let add = |into: &mut Histogram<u64>, from: &Histogram<u64>| {
            into.add(from)
                .expect("auto-resizing histograms always merge");
        };
        add(&mut self.scheduled, &other.scheduled);
        add(&mut self.sent, &other.sent);
        add(&mut self.lag, &other.lag);
        self.requests += other.requests;
        self.ok += other.ok;
        for i in 0..KINDS {
            self.errors[i] += other.errors[i];
            if self.first_error[i].is_none() {
                self.first_error[i].clone_from(&other.first_error[i]);
            }
        }
        for (status, n) in other.status {
            *self.status.entry(status).or_insert(0) += n;
        }
        self.bytes += other.bytes;
        self.late += other.late;
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), Second::default);
        }
        for (into, from) in self.seconds.iter_mut().zip(other.seconds) {
            into.requests += from.requests;
            into.ok += from.ok;
            into.failed += from.failed;
            into.dropped += from.dropped;
            into.completed += from.completed;
            match (&mut into.latency, from.latency) {
                (Some(a), Some(b)) => add(a, &b),
                (a @ None, b) => *a = b,
                (Some(_), None) => {}
            }
        }
        for (into, from) in self.endpoints.iter_mut().zip(other.endpoints) {
            into.requests += from.requests;
            into.ok += from.ok;
            into.failed += from.failed;
            add(&mut into.latency, &from.latency);
        }
    }
}

/// The merged recording of a whole run.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub total: Shard,
}

impl Measurements {
    pub fn failed(&self) -> u64 {
        self.total.errors.iter().sum()
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.total.errors[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(scheduled_ms: u64, sent_ms: u64, done_ms: u64, outcome: Outcome) -> Completed {
        Completed {
            endpoint: 0,
            scheduled: Duration::from_millis(scheduled_ms),
            sent: Duration::from_millis(sent_ms),
            done: Duration::from_millis(done_ms),
            outcome,
        }
    }

    #[test]
    fn latency_from_the_schedule_includes_the_wait_to_send() {
        let r = Recorder::new(1);
        let ok = Outcome::Response {
            status: 200,
            bytes: 10,
        };
        r.record(completed(0, 0, 2, ok.clone()));
        r.record(completed(100, 900, 902, ok));
        let m = r.finish();
        let max = m.total.scheduled.max();
        assert!((800_000..=803_000).contains(&max), "{max}");
        assert!(m.total.sent.max() < 2_100);
        assert_eq!(m.total.late, 1);
    }

    #[test]
    fn outcomes_are_counted_by_kind_and_second() {
        let r = Recorder::new(1);
        r.record(completed(
            10,
            10,
            20,
            Outcome::Response {
                status: 500,
                bytes: 0,
            },
        ));
        r.record(completed(
            1500,
            1500,
            2600,
            Outcome::Failed {
                kind: ErrorKind::Timeout,
                detail: "slow".into(),
            },
        ));
        r.dropped(0, Duration::from_millis(1700));
        let m = r.finish();
        assert_eq!(m.total.requests, 3);
        assert_eq!(m.errors(ErrorKind::Status), 1);
        assert_eq!(m.errors(ErrorKind::Timeout), 1);
        assert_eq!(m.errors(ErrorKind::Dropped), 1);
        assert_eq!(m.total.status[&500], 1);
        let s = &m.total.seconds;
        assert_eq!((s[0].requests, s[1].requests, s[1].dropped), (1, 2, 1));
        assert_eq!((s[0].completed, s[2].completed), (1, 1));
        assert_eq!(
            m.total.first_error[ErrorKind::Timeout.index()].as_deref(),
            Some("slow")
        );
    }
}
