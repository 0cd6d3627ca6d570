//! Purges shared by every edge through one Redis stream.
//!
//! Each edge purges its own cache first and then publishes what it purged (the tags of a
//! successful write's `Surrogate-Key`, an admin purge by tag, key or everything); an API
//! process may publish the tags of its writes too, for writes that did not pass through an
//! edge. Every edge reads the stream from the last entry it has seen and applies the entries
//! of other processes, so one that lost its connection catches up when it reconnects. If the
//! stream no longer holds the entry it saw last (trimmed to `max_len`, or a Redis restarted
//! without its data), the edge cannot know what it missed and drops every entry it holds.
//!
//! A write's purge can be confirmed: its publisher waits (bounded) until every live edge has
//! applied it, so the next read through any edge sees the write (see `confirm`).
//!
//! Purges are idempotent: applying one twice, or one an edge made itself, costs a refill.

mod config;
mod confirm;
mod entry;
mod publisher;
pub mod readers;

pub use config::{InvalidConfig, InvalidationConfig};
pub use entry::{Invalidation, Published, now_ms};
pub use publisher::{Confirmation, PublishMetrics, PublishTask, Publisher, connect};

/// An id that tells this process's entries from everyone else's: host name, pid and a
/// per-start nonce (a pid can be reused after a restart; a later process must not skip an
/// earlier one's entries).
pub fn origin_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}/{}/{nonce:08x}", std::process::id())
}
