//! Single flight: the first miss for a key becomes the *leader* and goes upstream; later
//! misses for the same key *follow*, waiting (bounded) for the leader to finish, then read
//! the cache. moka alone would send every concurrent miss to the origin.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

#[derive(Default)]
pub struct Flights {
    in_flight: Mutex<HashMap<Arc<str>, Arc<watch::Sender<bool>>>>,
}

pub enum Join {
    Leader(FillGuard),
    Follower(watch::Receiver<bool>),
}

impl Flights {
    pub fn join(self: &Arc<Self>, key: &Arc<str>) -> Join {
        let mut map = self.in_flight.lock();
        if let Some(tx) = map.get(key) {
            return Join::Follower(tx.subscribe());
        }
        let (tx, _) = watch::channel(false);
        let tx = Arc::new(tx);
        map.insert(key.clone(), tx.clone());
        Join::Leader(FillGuard {
            flights: self.clone(),
            key: key.clone(),
            done: tx,
        })
    }
}

/// Held by the leader while it fills; dropping it (stored, not cacheable or failed) wakes
/// the followers.
pub struct FillGuard {
    flights: Arc<Flights>,
    key: Arc<str>,
    done: Arc<watch::Sender<bool>>,
}

impl FillGuard {
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        {
            let mut map = self.flights.in_flight.lock();
            if map
                .get(&self.key)
                .is_some_and(|tx| Arc::ptr_eq(tx, &self.done))
            {
                map.remove(&self.key);
            }
        }
        self.done.send_replace(true);
    }
}

/// Waits until the leader is done or `limit` passes; true when the leader finished.
pub async fn follow(mut rx: watch::Receiver<bool>, limit: std::time::Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, rx.wait_for(|done| *done)).await,
        Ok(Ok(_))
    )
}
