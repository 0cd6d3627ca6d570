//! The TLS session store of an HTTPS listener: what a returning client's session id (TLS 1.2)
//! or ticket (TLS 1.3) names, so that its handshake skips the certificate and its signature.
//!
//! rustls's own `ServerSessionMemoryCache` finds a taken session in its eviction queue by a
//! linear scan (rustls issues #1200 and #1503). TLS 1.3 tickets are single-use, so every
//! resumption takes one: with the edge's 32,768 sessions stored, `memcmp` of that scan was
//! 38% of the edge's CPU under a benchmark of one new connection per request (every client
//! resuming), and the edge served 0.83× NGINX's connections. Here each operation is O(1):
//! a taken session leaves its place in the queue behind, marked stale by a sequence number,
//! and is skipped when the queue reaches it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use rustls::server::StoresServerSessions;

/// Sessions of one listener, at most `max`; the oldest stored is dropped first (as rustls's
/// own store and NGINX's `ssl_session_cache` do).
pub struct SessionStore {
    inner: Mutex<Sessions>,
}

struct Sessions {
    stored: HashMap<Vec<u8>, Stored>,
    /// Keys in the order they were stored, with the sequence number they were stored under.
    /// An entry whose key was taken or stored again since is stale and skipped. Its length
    /// is kept at `max` at most, so stale entries bound the memory as live ones do, and
    /// `stored` never holds more keys than this does.
    order: VecDeque<(Vec<u8>, u64)>,
    next: u64,
    max: usize,
}

struct Stored {
    value: Vec<u8>,
    seq: u64,
}

impl SessionStore {
    /// A store of at most `max` sessions (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        SessionStore {
            inner: Mutex::new(Sessions {
                // Filled in normal operation; reserving up front avoids rehashing under load.
                stored: HashMap::with_capacity(max.min(1 << 16)),
                order: VecDeque::with_capacity(max.min(1 << 16)),
                next: 0,
                max,
            }),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters (at worst a session is lost), so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sessions stored now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions().stored.len()
    }

    /// The live sessions, oldest first: what a reload hands to the new process.
    pub fn export(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let s = self.sessions();
        s.order
            .iter()
            .filter_map(|(key, seq)| {
                let stored = s.stored.get(key).filter(|v| v.seq == *seq)?;
                Some((key.clone(), stored.value.clone()))
            })
            .collect()
    }

    /// Stores sessions handed over by the old process, oldest first: they keep their order,
    /// and the bound applies (a smaller `session_cache` keeps the newest).
    pub fn import(&self, sessions: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        let mut s = self.sessions();
        for (key, value) in sessions {
            s.put(key, value);
        }
    }
}

impl Sessions {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let seq = self.next;
        self.next += 1;
        self.order.push_back((key.clone(), seq));
        self.stored.insert(key, Stored { value, seq });
        while self.order.len() > self.max {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.stored.get(&key).is_some_and(|s| s.seq == seq) {
                self.stored.remove(&key);
            }
        }
    }
}

impl StoresServerSessions for SessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.sessions().put(key, value);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.sessions().stored.get(key).map(|s| s.value.clone())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.sessions().stored.remove(key).map(|s| s.value)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.sessions();
        f.debug_struct("SessionStore")
            .field("stored", &s.stored.len())
            .field("max", &s.max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    #[test]
    fn a_stored_session_is_found_and_taken_once() {
        let s = SessionStore::new(8);
        assert!(s.put(key(1), b"one".to_vec()));
        assert_eq!(s.get(&key(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(
            s.get(&key(1)).as_deref(),
            Some(&b"one"[..]),
            "get leaves it"
        );
        assert_eq!(s.take(&key(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(s.take(&key(1)), None, "a ticket resumes one handshake only");
        assert_eq!(s.get(&key(1)), None);
        assert_eq!(s.get(&key(2)), None);
    }

    #[test]
    fn the_oldest_session_goes_first_when_full() {
        let s = SessionStore::new(3);
        for i in 0..5 {
            s.put(key(i), vec![i as u8]);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(&key(0)), None);
        assert_eq!(s.get(&key(1)), None);
        for i in 2..5 {
            assert_eq!(s.get(&key(i)), Some(vec![i as u8]));
        }
    }

    /// Taken sessions leave stale places in the queue; they count towards the bound (so
    /// memory stays bounded) and never evict a live session out of turn.
    #[test]
    fn taken_sessions_neither_grow_the_store_nor_evict_out_of_order() {
        let s = SessionStore::new(4);
        for i in 0..1000 {
            s.put(key(i), vec![1]);
            // Every other session resumes at once, as TLS 1.3 clients that reconnect do.
            if i % 2 == 0 {
                assert!(s.take(&key(i)).is_some());
            }
            assert!(s.sessions().order.len() <= 4);
            assert!(s.len() <= 4);
        }
        // The last four stored (996..1000), less the two taken.
        assert_eq!(s.get(&key(999)), Some(vec![1]));
        assert_eq!(s.get(&key(997)), Some(vec![1]));
        assert_eq!(s.get(&key(995)), None, "stored five puts ago");
    }

    /// A key stored again lives as long as its newer copy: the older place in the queue is
    /// stale and does not remove it.
    #[test]
    fn a_session_stored_again_is_not_evicted_by_its_older_place() {
        let s = SessionStore::new(3);
        s.put(key(1), b"old".to_vec());
        s.put(key(2), vec![]);
        s.put(key(1), b"new".to_vec());
        s.put(key(3), vec![]);
        // The queue was [1, 2, 1, 3]: its first place (key 1's older copy) went.
        assert_eq!(s.get(&key(1)).as_deref(), Some(&b"new"[..]));
        s.put(key(4), vec![]);
        s.put(key(5), vec![]);
        // Now key 1's newer place has gone too.
        assert_eq!(s.get(&key(1)), None);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn export_is_the_live_sessions_oldest_first_and_import_keeps_the_newest_that_fit() {
        let s = SessionStore::new(4);
        for i in 0..6 {
            s.put(key(i), vec![i as u8]);
        }
        s.take(&key(3));
        s.put(key(4), b"again".to_vec());
        let exported = s.export();
        let keys: Vec<_> = exported.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![key(5), key(4)],
            "2 went, 3 was taken, 4 moved to the end"
        );
        assert_eq!(exported[1].1, b"again".to_vec());

        let bigger = SessionStore::new(8);
        bigger.import(exported.clone());
        assert_eq!(bigger.export(), exported);
        let smaller = SessionStore::new(1);
        smaller.import(exported);
        assert_eq!(smaller.export(), vec![(key(4), b"again".to_vec())]);
    }

    #[test]
    fn a_store_of_zero_keeps_the_newest_session() {
        let s = SessionStore::new(0);
        s.put(key(1), vec![1]);
        s.put(key(2), vec![2]);
        assert_eq!(s.get(&key(1)), None);
        assert_eq!(s.get(&key(2)), Some(vec![2]));
    }
}
