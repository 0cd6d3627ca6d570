//! Stale-while-revalidate in the background (NGINX's `proxy_cache_background_update`): when a
//! request finds its entry expired but inside the stale-while-revalidate window, it is
//! answered from the stale copy at once, and the edge fetches a fresh copy itself, on a task of
//! its own, holding the key's fill lock so that concurrent requests do not refetch it.
//!
//! The refresh is a plain `GET` of the client's path and query (no client headers but `Host`:
//! cacheable requests carry no credentials) to one backend chosen as for any request, through
//! Pingora's connector and its keep-alive pool. It is stored under the same rules as a fill
//! (status, `Cache-Control`, size, purges since it started); anything else leaves the stale
//! entry to age out.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use http::header;
use pingora_core::connectors::http::Connector;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::balancer::{Backend, Balancer};
use crate::cache::flight::FillGuard;
use crate::cache::{self, Cache};
use crate::config::EdgeConfig;
use crate::metrics;
use crate::upstream::{self, Failure};

pub struct Refresher {
    connector: Connector,
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
    pub fn new(config: Arc<EdgeConfig>, balancer: Arc<Balancer>, cache: Arc<Cache>) -> Self {
        Refresher {
            connector: Connector::new(None),
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
        let backend = slot.backend().clone();
        let u = &self.config.upstream;
        let total = u.timeouts.total.get();
        let peer = upstream::peer(&backend, u, u.timeouts.per_try.get(), total);
        let started = Instant::now();
        let fetched = tokio::time::timeout(total, async {
            let (mut session, _reused) = self.connector.get_http_session(&peer).await?;
            let mut req = RequestHeader::build("GET", job.uri.as_bytes(), Some(2))?;
            if let Some(host) = &job.host {
                req.insert_header(header::HOST, host.as_str())?;
            }
            session.write_request_header(Box::new(req)).await?;
            session.finish_request_body().await?;
            session.read_response_header().await?;
            let header = session.response_header().cloned().ok_or_else(|| {
                Error::explain(ErrorType::InvalidHTTPHeader, "no response header")
            })?;
            metrics::UPSTREAM_DURATION
                .with_label_values(&[&backend.label])
                .observe(started.elapsed().as_secs_f64());
            let max = self.cache.config.max_object_bytes();
            let mut body = BytesMut::new();
            while let Some(chunk) = session.read_response_body().await? {
                if body.len() + chunk.len() > max {
                    return Ok((header, None, session));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, Box<Error>>((header, Some(body), session))
        })
        .await;
        let (header, body, session) = match fetched {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                self.failed(&backend, Failure::of(&e));
                return Err(e);
            }
            Err(_) => {
                self.failed(&backend, Failure::Timeout);
                return Error::e_explain(ErrorType::ReadTimedout, "upstream.timeouts.total");
            }
        };
        let status = header.status.as_u16();
        if matches!(status, 502..=504) {
            self.failed(&backend, Failure::Status5xx);
        } else {
            self.balancer.report_success(&backend);
        }
        match body {
            Some(_) => {
                self.connector
                    .release_http_session(session, &peer, Some(u.keepalive_timeout.get()))
                    .await
            }
            // Not read to the end: the connection cannot be reused.
            None => drop(session),
        }
        let (Some(body), Some(lifetime)) = (body, self.cache.storable(job.route, &header)) else {
            return Ok(false);
        };
        let entry = cache::build_entry(
            job.key.len(),
            &header,
            body.freeze(),
            lifetime,
            cache::surrogate_keys(&header),
            fill_seq,
            &self.cache.compression,
        );
        let stored = self.cache.store(job.key.clone(), entry);
        drop(job.guard);
        drop(slot);
        Ok(stored)
    }

    fn failed(&self, backend: &Backend, failure: Failure) {
        failure.count(backend);
        self.balancer.report_failure(backend);
    }
}
