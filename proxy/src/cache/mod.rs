//! The response cache: moka (TinyLFU admission, so one-hit pages don't evict hot ones)
//! bounded in bytes, with single-flight fills, stale windows and tag (`Surrogate-Key`)
//! invalidation.
//!
//! Invalidation is exact without scanning: every purge takes a number from one sequence and
//! records it against each purged tag (and key); every entry remembers the sequence number
//! taken when its fill *started*. An entry is valid while no purge of one of its tags (or of
//! its key, or of everything) is newer than its fill. So a purge that lands while a fill is
//! in flight makes that fill's result invalid on arrival, and a lookup never returns an
//! entry older than a purge that has completed. moka's `invalidate_entries_if` then frees the
//! memory of purged entries in the background.

pub mod encoding;
pub mod flight;
pub mod journal;
pub mod key;
pub mod policy;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::notification::RemovalCause;
use parking_lot::RwLock;
use pingora_http::ResponseHeader;

use crate::config::{CacheConfig, CompressionConfig};
use crate::metrics;
use encoding::{Accepts, Encoding};
use flight::{Flights, Join};
use journal::{Journal, Purge};
use policy::Lifetime;
use reviews_shared::invalidation::{Confirmation, Invalidation};

/// Bytes an entry costs besides its key, header fields and bodies: moka's node, its deque
/// and timer-wheel links, its frequency sketch and the `Arc` around the key, our `Entry` and
/// the `ResponseHeader` around the header map, allocator headers of the dozen allocations,
/// and what the allocator keeps of freed ones under eviction churn. Calibrated against RSS
/// with `examples/cache_memory.rs` and a real edge filled with 47-byte and 2.7 KB pages (see
/// the README): 1,024 left small pages at 1.16× `max_size`.
pub const ENTRY_OVERHEAD: usize = 1472;
/// Per header-map slot (allocated, used or not): the bucket with name and value handles and
/// its index entry.
const HEADER_SLOT: usize = 112;

/// One cached response: the identity body, and the compressed forms made once, on first
/// demand (by the fill itself when its client accepts one, else by the first hit that does).
pub struct Entry {
    /// Status, origin headers without hop-by-hop ones, `Content-Length`, `Content-Encoding`
    /// and `Surrogate-Key`; `Vary` set by the edge.
    pub header: ResponseHeader,
    pub identity: Bytes,
    /// `None` inside when compressing does not make the body smaller.
    gzip: OnceLock<Option<Bytes>>,
    br: OnceLock<Option<Bytes>>,
    compressible: bool,
    pub tags: Box<[Box<str>]>,
    /// Purge sequence number when the fill started.
    pub seq: u64,
    pub stored_at: Instant,
    pub lifetime: Lifetime,
    pub weight: u32,
}

impl Entry {
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    /// The body in `e`, compressing it the first time it is asked for. `None` for identity,
    /// for bodies not worth compressing, and when compression does not shrink it.
    pub fn compressed(&self, e: Encoding, config: &CompressionConfig) -> Option<Bytes> {
        if !self.compressible {
            return None;
        }
        let cell = match e {
            Encoding::Gzip => &self.gzip,
            Encoding::Br => &self.br,
            Encoding::Identity => return None,
        };
        cell.get_or_init(|| {
            encoding::compress(e, &self.identity, config).filter(|c| c.len() < self.identity.len())
        })
        .clone()
    }

    /// The client's most preferred encoding (in config order) that it accepts, else identity.
    pub fn body_for(&self, accepts: Accepts, config: &CompressionConfig) -> (Encoding, Bytes) {
        if self.compressible {
            for name in &config.encodings {
                let e = Encoding::from(*name);
                if accepts.allows(e)
                    && let Some(b) = self.compressed(e, config)
                {
                    return (e, b);
                }
            }
        }
        (Encoding::Identity, self.identity.clone())
    }

    fn keep_for(&self) -> Duration {
        self.lifetime.fresh
            + self
                .lifetime
                .stale_while_revalidate
                .max(self.lifetime.stale_if_error)
    }
}

/// What a lookup found.
pub enum Lookup {
    Fresh(Arc<Entry>),
    /// Past its freshness; `revalidate` while inside stale-while-revalidate, `if_error` while
    /// inside stale-if-error.
    Stale {
        entry: Arc<Entry>,
        revalidate: bool,
        if_error: bool,
    },
    Miss,
}

/// Records kept before the purge log is pruned.
const PURGE_RECORDS_KEPT: usize = 65_536;
/// A purge record is pruned only this long after its purge: far longer than a fill takes
/// (fills are bounded by `upstream.timeouts.total`), and a fill that did start before a
/// pruned purge is refused anyway (see [`Purges::floor`]).
const PURGE_RECORD_HORIZON: Duration = Duration::from_secs(120);

struct Purges {
    seq: AtomicU64,
    /// Newest purge of anything; entries filled since then need no further check.
    last: AtomicU64,
    all_before: AtomicU64,
    /// Per purged tag (or key): the purge's number and when it happened.
    by_tag: RwLock<HashMap<Box<str>, (u64, Instant)>>,
    /// The newest purge whose record was pruned: a fill that started before it can no longer
    /// be checked against it, so it is not stored.
    floor: AtomicU64,
    keep: usize,
    horizon: Duration,
}

impl Default for Purges {
    fn default() -> Self {
        Purges::with_limits(PURGE_RECORDS_KEPT, PURGE_RECORD_HORIZON)
    }
}

impl Purges {
    fn with_limits(keep: usize, horizon: Duration) -> Self {
        Purges {
            seq: AtomicU64::new(0),
            last: AtomicU64::new(0),
            all_before: AtomicU64::new(0),
            by_tag: RwLock::new(HashMap::new()),
            floor: AtomicU64::new(0),
            keep,
            horizon,
        }
    }

    fn now(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    fn purge<'a>(&self, tags: impl Iterator<Item = &'a str>) -> u64 {
        let p = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let at = Instant::now();
            let mut map = self.by_tag.write();
            for t in tags {
                map.insert(t.into(), (p, at));
            }
        }
        self.last.fetch_max(p, Ordering::SeqCst);
        p
    }

    fn purge_all(&self) -> u64 {
        let p = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.all_before.fetch_max(p, Ordering::SeqCst);
        self.last.fetch_max(p, Ordering::SeqCst);
        p
    }

    /// Once more than `keep` records are held, forgets those older than `horizon`, raising
    /// the floor to the newest one forgotten. Returns the forgotten records, whose entries
    /// the caller must invalidate (an entry stored in the instant between a fill's last check
    /// and the purge carries a purged tag but predates moka's invalidation of it).
    fn prune(&self) -> HashMap<Box<str>, u64> {
        if self.by_tag.read().len() <= self.keep {
            return HashMap::new();
        }
        let now = Instant::now();
        let mut map = self.by_tag.write();
        let mut forgotten = HashMap::new();
        map.retain(|tag, &mut (p, at)| {
            let keep = now.saturating_duration_since(at) < self.horizon;
            if !keep {
                forgotten.insert(tag.clone(), p);
            }
            keep
        });
        if let Some(&newest) = forgotten.values().max() {
            self.floor.fetch_max(newest, Ordering::SeqCst);
        }
        forgotten
    }

    /// Whether a fill that started at `seq` may be stored.
    fn may_store(&self, seq: u64, tags: &[Box<str>], key: &str) -> bool {
        seq >= self.floor.load(Ordering::SeqCst) && self.is_valid(seq, tags, key)
    }

    fn is_valid(&self, seq: u64, tags: &[Box<str>], key: &str) -> bool {
        if self.last.load(Ordering::SeqCst) <= seq {
            return true;
        }
        if self.all_before.load(Ordering::SeqCst) > seq {
            return false;
        }
        let map = self.by_tag.read();
        let newer = |t: &str| map.get(t).is_some_and(|&(p, _)| p > seq);
        !(newer(key) || tags.iter().any(|t| newer(t)))
    }

    fn records(&self) -> usize {
        self.by_tag.read().len()
    }
}

/// Keys are hashed with foldhash rather than SipHash: every request hashes its key, hits
/// included. foldhash is seeded per process, so colliding keys cannot be worked out in advance.
type Store = moka::sync::Cache<Arc<str>, Arc<Entry>, foldhash::fast::RandomState>;

pub struct Cache {
    store: Store,
    purges: Purges,
    flights: Arc<Flights>,
    /// Purges shared with the other process during a zero-downtime upgrade.
    pub journal: Journal,
    /// Purges shared with the other edges (`[invalidation]`).
    pub(crate) invalidation: crate::invalidation::State,
    pub config: CacheConfig,
    pub compression: CompressionConfig,
}

struct KeepFor;

impl moka::Expiry<Arc<str>, Arc<Entry>> for KeepFor {
    fn expire_after_create(
        &self,
        _k: &Arc<str>,
        v: &Arc<Entry>,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.keep_for())
    }
}

impl Cache {
    pub fn new(config: CacheConfig, compression: CompressionConfig) -> Self {
        let store = moka::sync::Cache::builder()
            .max_capacity(config.max_size.bytes())
            .weigher(|_k: &Arc<str>, v: &Arc<Entry>| v.weight)
            .expire_after(KeepFor)
            .support_invalidation_closures()
            .eviction_listener(|_k, _v, cause| match cause {
                RemovalCause::Size => metrics::CACHE_EVICTIONS.inc(),
                RemovalCause::Explicit => metrics::CACHE_INVALIDATIONS.inc(),
                RemovalCause::Expired | RemovalCause::Replaced => {}
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Cache {
            store,
            purges: Purges::default(),
            flights: Arc::new(Flights::default()),
            journal: Journal::default(),
            invalidation: crate::invalidation::State::default(),
            config,
            compression,
        }
    }

    pub fn lookup(&self, key: &str) -> Lookup {
        if self.journal.is_active() {
            self.apply_peer_purges();
        }
        let Some(entry) = self.store.get(key) else {
            return Lookup::Miss;
        };
        if !self.purges.is_valid(entry.seq, &entry.tags, key) {
            self.store.invalidate(key);
            return Lookup::Miss;
        }
        let age = entry.age(Instant::now());
        let l = entry.lifetime;
        if age < l.fresh {
            return Lookup::Fresh(entry);
        }
        let over = age - l.fresh;
        let revalidate = over < l.stale_while_revalidate;
        let if_error = over < l.stale_if_error;
        if revalidate || if_error {
            Lookup::Stale {
                entry,
                revalidate,
                if_error,
            }
        } else {
            Lookup::Miss
        }
    }

    /// Becomes the filler of `key` or follows the one in flight.
    pub fn join_fill(&self, key: &Arc<str>) -> Join {
        self.flights.join(key)
    }

    /// Whether a response may be stored, and for how long: the route's TTL (else the default)
    /// under the origin's `Cache-Control`, a size within `max_object_size` when announced,
    /// and no `Content-Encoding` of the origin's own (the edge compresses itself).
    pub fn storable(&self, route: Option<usize>, resp: &ResponseHeader) -> Option<Lifetime> {
        let c = &self.config;
        let ttl = route
            .and_then(|r| c.routes.get(r))
            .and_then(|r| r.ttl)
            .unwrap_or(c.default_ttl.get());
        let decision = policy::decide(
            resp.status.as_u16(),
            &resp.headers,
            ttl,
            c.stale_while_revalidate.get(),
            c.stale_if_error.get(),
        );
        let length = crate::headers::content_length(&resp.headers);
        match decision {
            policy::Decision::Store(lifetime)
                if length.is_none_or(|l| l <= c.max_object_bytes())
                    && !resp.headers.contains_key(http::header::CONTENT_ENCODING) =>
            {
                Some(self.invalidation.cap(lifetime))
            }
            _ => None,
        }
    }

    /// The purge sequence number a fill must remember when it starts.
    pub fn fill_started(&self) -> u64 {
        self.purges.now()
    }

    /// Stores a filled entry unless a purge of its tags or key landed since its fill started.
    /// Returns whether it was stored.
    pub fn store(&self, key: Arc<str>, entry: impl Into<Arc<Entry>>) -> bool {
        let entry = entry.into();
        if !self.purges.may_store(entry.seq, &entry.tags, &key) {
            metrics::CACHE_FILLS.with_label_values(&["purged"]).inc();
            return false;
        }
        metrics::CACHE_FILLS.with_label_values(&["stored"]).inc();
        self.store.insert(key, entry);
        true
    }

    /// Invalidates every entry carrying one of `tags`. Lookups stop returning them at once;
    /// their memory is freed by moka's housekeeping. Then the other edges are told, and the
    /// future resolves once they have applied it (bounded; see [`crate::invalidation`]).
    /// This edge purges before the first await: its own next lookup never waits for Redis.
    pub async fn purge_tags(&self, tags: &[&str]) -> Confirmation {
        for t in tags {
            self.journal.record(&Purge::Tag((*t).into()));
        }
        self.purge_tags_here(tags);
        if tags.is_empty() {
            return Confirmation::Off;
        }
        let shared = Invalidation::Tags(tags.iter().map(|t| (*t).to_owned()).collect());
        self.invalidation.publish_confirmed(shared).await
    }

    fn purge_tags_here(&self, tags: &[&str]) {
        if tags.is_empty() {
            return;
        }
        let p = self.purges.purge(tags.iter().copied());
        let owned: Vec<Box<str>> = tags.iter().map(|t| (*t).into()).collect();
        let _ = self.store.invalidate_entries_if(move |_k, v| {
            v.seq < p && v.tags.iter().any(|t| owned.contains(t))
        });
        self.prune_purge_log();
    }

    /// As [`Cache::purge_tags`], for one key.
    pub async fn purge_key(&self, key: &str) -> Confirmation {
        self.journal.record(&Purge::Key(key.into()));
        self.purge_key_here(key);
        let shared = Invalidation::Key(key.to_owned());
        self.invalidation.publish_confirmed(shared).await
    }

    fn purge_key_here(&self, key: &str) {
        self.purges.purge(std::iter::once(key));
        self.store.invalidate(key);
        self.prune_purge_log();
    }

    /// Keeps the purge log bounded: every write through the edge purges its product's tags,
    /// so without pruning it would hold one record per product ever written to.
    fn prune_purge_log(&self) {
        let forgotten = self.purges.prune();
        if forgotten.is_empty() {
            return;
        }
        let older = move |name: &str, seq: u64| forgotten.get(name).is_some_and(|&p| seq < p);
        let _ = self.store.invalidate_entries_if(move |k, v| {
            older(k, v.seq) || v.tags.iter().any(|t| older(t, v.seq))
        });
    }

    /// Purge records held (bounded; see [`PURGE_RECORDS_KEPT`]).
    pub fn purge_records(&self) -> usize {
        self.purges.records()
    }

    /// As [`Cache::purge_tags`], for everything.
    pub async fn purge_all(&self) -> Confirmation {
        self.journal.record(&Purge::All);
        self.purge_all_here();
        self.invalidation.publish_confirmed(Invalidation::All).await
    }

    /// Applies a purge another edge or an API process published: here only, neither
    /// journaled (the other process of an upgrade reads the stream too) nor published again.
    pub fn apply_shared(&self, what: &Invalidation) {
        match what {
            Invalidation::Tags(tags) => {
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                self.purge_tags_here(&tags);
            }
            Invalidation::Key(k) => self.purge_key_here(k),
            Invalidation::All => self.purge_all_here(),
        }
    }

    /// Drops every entry stored so far, here only: purges may have been missed.
    pub fn drop_everything(&self) {
        self.purge_all_here();
    }

    fn purge_all_here(&self) {
        self.purges.purge_all();
        self.store.invalidate_all();
    }

    /// Applies the purges the other process of an upgrade journaled since the last call.
    pub fn apply_peer_purges(&self) {
        for purge in self.journal.peer_purges() {
            match purge {
                Purge::Tag(t) => self.purge_tags_here(&[&t]),
                Purge::Key(k) => self.purge_key_here(&k),
                Purge::All => self.purge_all_here(),
            }
        }
    }

    pub fn weighted_size(&self) -> u64 {
        self.store.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.store.entry_count()
    }

    /// Lets moka apply pending evictions so the size figures are current.
    pub fn sync(&self) {
        self.store.run_pending_tasks();
    }
}

/// Headers never stored: hop-by-hop ones, those the edge sets per response, and the
/// `Surrogate-Key` tags, which are kept beside the entry and never shown to clients.
const NOT_STORED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "age",
    "vary",
    "surrogate-key",
];

/// Builds the entry a fill stores: the origin's headers cleaned up, the identity body and
/// the compressed forms that are worth keeping.
pub fn build_entry(
    key_len: usize,
    upstream: &ResponseHeader,
    body: Bytes,
    lifetime: Lifetime,
    tags: Box<[Box<str>]>,
    seq: u64,
    compression: &CompressionConfig,
) -> Entry {
    // Without the case-preserving name map: half the work to clone on every hit.
    let mut header =
        ResponseHeader::build_no_case(upstream.status, Some(upstream.headers.len() + 4))
            .expect("a valid status stays valid");
    let mut weight = ENTRY_OVERHEAD + key_len;
    for (name, value) in upstream.headers.iter() {
        if NOT_STORED.contains(&name.as_str()) {
            continue;
        }
        weight += name.as_str().len() + value.len();
        // Copies, not clones: a parsed header shares the upstream read buffer (kilobytes),
        // which a clone would keep alive for the life of the entry.
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            continue;
        };
        let _ = header.append_header(name, value);
    }
    let compressible =
        compression.enabled && body.len() >= compression.min_bytes() && is_compressible(upstream);
    if compressible {
        // Compressed forms are made later, on demand; they are charged up front at 40% of
        // the body each (JSON of a few KiB compresses to 25–40%) so the weight never grows.
        weight += compression.encodings.len() * body.len() * 2 / 5;
    }
    if compression.enabled {
        let _ = header.insert_header(http::header::VARY, "Accept-Encoding");
        weight += 16;
    }
    weight += header.headers.capacity() * HEADER_SLOT;
    weight += body.len();
    weight += tags.iter().map(|t| t.len() + 16).sum::<usize>();
    Entry {
        header,
        identity: body,
        gzip: OnceLock::new(),
        br: OnceLock::new(),
        compressible,
        tags,
        seq,
        stored_at: Instant::now(),
        lifetime,
        weight: u32::try_from(weight).unwrap_or(u32::MAX),
    }
}

/// Text-like bodies the origin did not encode already.
pub fn is_compressible(h: &ResponseHeader) -> bool {
    if h.headers.contains_key(http::header::CONTENT_ENCODING) {
        return false;
    }
    let ct = h
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ct.is_empty()
        || ct.starts_with("text/")
        || ct.contains("json")
        || ct.contains("javascript")
        || ct.contains("xml")
        || ct.contains("svg")
}

/// The `Surrogate-Key` tags of a response, space separated (Fastly's convention).
pub fn surrogate_keys(h: &ResponseHeader) -> Box<[Box<str>]> {
    h.headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .map(Box::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_during_a_fill_invalidates_the_fill() {
        let p = Purges::default();
        let started = p.now();
        p.purge(["product-2"].into_iter());
        let tags: Box<[Box<str>]> = vec!["product-2".into()].into();
        assert!(!p.is_valid(started, &tags, "k"));
        // A fill starting after the purge is fine, and other tags are untouched.
        assert!(p.is_valid(p.now(), &tags, "k"));
        let other: Box<[Box<str>]> = vec!["product-3".into()].into();
        assert!(p.is_valid(started, &other, "k"));
    }

    #[test]
    fn old_purge_records_are_pruned_and_fills_older_than_them_are_refused() {
        let p = Purges::with_limits(2, Duration::ZERO);
        let before = p.now();
        for t in ["product-1", "product-2", "product-3"] {
            p.purge(std::iter::once(t));
        }
        let forgotten = p.prune();
        assert_eq!(forgotten.len(), 3);
        assert_eq!(p.records(), 0);
        let tags: Box<[Box<str>]> = vec!["product-9".into()].into();
        // A fill that started before the forgotten purges can no longer be checked: refused.
        assert!(!p.may_store(before, &tags, "k"));
        // One that started after them is fine.
        assert!(p.may_store(p.now(), &tags, "k"));
        // Under the limit, nothing is pruned.
        p.purge(std::iter::once("product-4"));
        assert!(p.prune().is_empty());
        assert_eq!(p.records(), 1);
    }

    #[test]
    fn recent_purge_records_survive_pruning() {
        let p = Purges::with_limits(0, Duration::from_secs(3600));
        let before = p.now();
        p.purge(std::iter::once("product-2"));
        assert!(p.prune().is_empty());
        let tags: Box<[Box<str>]> = vec!["product-2".into()].into();
        assert!(!p.may_store(before, &tags, "k"));
    }

    #[test]
    fn purge_all_invalidates_everything_older() {
        let p = Purges::default();
        let started = p.now();
        p.purge_all();
        assert!(!p.is_valid(started, &[], "k"));
        assert!(p.is_valid(p.now(), &[], "k"));
    }
}
