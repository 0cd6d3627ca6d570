//! Stale-while-revalidate in the background (NGINX's `proxy_cache_background_update`): when a
//! request finds its entry expired but inside the stale-while-revalidate window, it is
//! answered from the stale copy at once, and the edge fetches a fresh copy itself, on a task of
//! its own, holding the key's fill lock so that concurrent requests do not refetch it.
//!
//! The refresh is a plain `GET` of the client's path and query (no client headers but `Host`:
//! cacheable requests carry no credentials) to one backend chosen as for any request, through
//! the same keep-alive pool as the fast miss path (`fetch.rs`). It is stored under the same rules as a fill
//! (status, `Cache-Control`, size, purges since it started); anything else leaves the stale
//! entry to age out.

use std::sync::Arc;

use http::header;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::balancer::Balancer;
use crate::cache::flight::FillGuard;
use crate::cache::{self, Cache};
use crate::config::EdgeConfig;
use crate::fetch::Fetcher;

pub struct Refresher {
    fetcher: Arc<Fetcher>,
    balancer: Arc<Balancer>,
    cache: Arc<Cache>,
    config: Arc<EdgeConfig>,
}

/// What one background refresh fetches and where it stores the result.
pub struct Refresh {
    pub key: Arc<str>,
    /// The client's path and query, as sent.
    pub uri: String,
    pub host: Option<String>,
    pub route: Option<usize>,
    /// Holds the key's fill lock until the refresh ends.
    pub guard: FillGuard,
}

impl Refresher {
    pub fn new(
        config: Arc<EdgeConfig>,
        balancer: Arc<Balancer>,
        cache: Arc<Cache>,
        fetcher: Arc<Fetcher>,
    ) -> Self {
        Refresher {
            fetcher,
            balancer,
            cache,
            config,
        }
    }

    /// Starts the refresh on its own task; the caller answers from the stale copy.
    pub fn spawn(self: &Arc<Self>, job: Refresh) {
        let this = self.clone();
        tokio::spawn(async move {
            let key = job.key.clone();
            match this.refresh(job).await {
                Ok(stored) => tracing::debug!(%key, stored, "background refresh done"),
                Err(e) => tracing::debug!(%key, error = %e, "background refresh failed"),
            }
        });
    }

    /// Fetches and stores; `Ok(false)` when the response may not be stored. A refresh does not
    /// queue for a backend: with every one at its limit, the stale copy simply ages on.
    async fn refresh(&self, job: Refresh) -> Result<bool> {
        let fill_seq = self.cache.fill_started();
        let Ok(slot) = self.balancer.try_acquire(&[]) else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "no backend slot free");
        };
        let u = &self.config.upstream;
        let mut req = RequestHeader::build("GET", job.uri.as_bytes(), Some(2))?;
        if let Some(host) = &job.host {
            req.insert_header(header::HOST, host.as_str())?;
        }
        let max = self.cache.config.max_object_bytes();
        let fetched = self
            .fetcher
            .get(
                &slot,
                req,
                u.timeouts.per_try.get(),
                u.timeouts.total.get(),
                max,
            )
            .await
            .map_err(|f| f.error)?;
        drop(slot);
        let lifetime = self.cache.storable(job.route, &fetched.header);
        let (None, Some(lifetime)) = (fetched.rest, lifetime) else {
            return Ok(false);
        };
        let entry = cache::build_entry(
            job.key.len(),
            &fetched.header,
            fetched.body.freeze(),
            lifetime,
            cache::surrogate_keys(&fetched.header),
            fill_seq,
            &self.cache.compression,
        );
        let stored = self.cache.store(job.key.clone(), entry);
        drop(job.guard);
        Ok(stored)
    }
}
