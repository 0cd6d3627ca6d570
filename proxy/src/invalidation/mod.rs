//! Purges shared with the other edges and the API processes through a Redis stream
//! (`[invalidation]`; the protocol is in `reviews_shared::invalidation`).
//!
//! The cache publishes every purge it makes on its own account (a write's `Surrogate-Key`, an
//! admin purge) through [`State::publish_confirmed`]: the answer to that write or purge waits,
//! at most `invalidation.confirm_timeout`, until every other live edge has applied it, so the
//! next read through any edge sees the write. [`subscriber`] applies what others publish and
//! reports how far it got. What ties them to the cache lives in [`State`]: the publisher, the last
//! stream id read (written beside a snapshot, so a restarted or upgraded edge resumes from
//! it rather than from "now"), and the lifetime cap in force while the stream cannot be read.

pub mod subscriber;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use reviews_shared::invalidation::{Confirmation, Invalidation, PublishTask, Publisher};

use crate::cache::policy::Lifetime;

/// Where the subscriber starts reading when it (re)connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// An empty cache: nothing before the stream's newest entry concerns it.
    Newest,
    /// After the entry with this id (`0-0`: the stream was empty then). If the stream no
    /// longer holds it, what came after may be lost: everything is dropped.
    After(String),
    /// Entries whose purges may have been missed (a snapshot written without a stream
    /// position): dropped on the first connection.
    Unknown,
}

/// The cache's side of shared invalidation; inert until a publisher is set.
pub struct State {
    publisher: OnceLock<Publisher>,
    /// Milliseconds an entry stored now may live at most; 0 = no cap.
    ttl_cap_ms: AtomicU64,
    /// The id of the last stream entry read.
    position: Mutex<Option<String>>,
    resume: Mutex<Resume>,
}

impl Default for State {
    fn default() -> Self {
        State {
            publisher: OnceLock::new(),
            ttl_cap_ms: AtomicU64::new(0),
            position: Mutex::new(None),
            resume: Mutex::new(Resume::Newest),
        }
    }
}

impl State {
    pub fn set_publisher(&self, p: Publisher) {
        let _ = self.publisher.set(p);
    }

    pub fn is_enabled(&self) -> bool {
        self.publisher.get().is_some()
    }

    /// This process's origin id, `None` when not sharing.
    pub fn origin(&self) -> Option<&str> {
        self.publisher.get().map(Publisher::origin)
    }

    /// Tells the other edges of a purge this edge made and waits (bounded) until they have
    /// applied it; `Off` at once when not sharing.
    pub async fn publish_confirmed(&self, what: Invalidation) -> Confirmation {
        match self.publisher.get() {
            Some(p) => p.publish_confirmed(what).await,
            None => Confirmation::Off,
        }
    }

    /// Caps the lifetimes of entries stored from now on (`None` lifts the cap).
    pub fn set_cap(&self, cap: Option<Duration>) {
        let ms = cap.map_or(0, |d| (d.as_millis() as u64).max(1));
        self.ttl_cap_ms.store(ms, Ordering::Relaxed);
    }

    /// `l` within the cap in force: fresh and stale windows alike, so a purge missed while
    /// disconnected leaves nothing stale for longer than the cap.
    pub fn cap(&self, l: Lifetime) -> Lifetime {
        match self.ttl_cap_ms.load(Ordering::Relaxed) {
            0 => l,
            ms => {
                let cap = Duration::from_millis(ms);
                Lifetime {
                    fresh: l.fresh.min(cap),
                    stale_while_revalidate: l.stale_while_revalidate.min(cap),
                    stale_if_error: l.stale_if_error.min(cap),
                }
            }
        }
    }

    pub fn position(&self) -> Option<String> {
        self.position.lock().clone()
    }

    pub fn set_position(&self, id: &str) {
        *self.position.lock() = Some(id.to_owned());
    }

    /// Sets where the subscriber starts (a loaded snapshot's position).
    pub fn resume_from(&self, r: Resume) {
        *self.resume.lock() = r;
    }

    pub fn resume(&self) -> Resume {
        self.resume.lock().clone()
    }
}

/// Runs the publisher's task on the edge's background runtime.
pub struct PublishService {
    pub task: Mutex<Option<PublishTask>>,
}

#[async_trait]
impl BackgroundService for PublishService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(task) = self.task.lock().take() else {
            return;
        };
        tokio::select! {
            () = task.run() => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_shortens_every_window_and_lifts() {
        let s = State::default();
        let l = Lifetime {
            fresh: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(1),
        };
        assert_eq!(s.cap(l), l);
        s.set_cap(Some(Duration::from_secs(5)));
        let c = s.cap(l);
        assert_eq!(c.fresh, Duration::from_secs(5));
        assert_eq!(c.stale_while_revalidate, Duration::from_secs(5));
        assert_eq!(c.stale_if_error, Duration::from_secs(1));
        s.set_cap(None);
        assert_eq!(s.cap(l), l);
    }
}
