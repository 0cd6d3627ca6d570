//! The edge's request flow as Pingora [`ProxyHttp`] hooks. Per request, [`Ctx`] carries the
//! cache decision, the fill in progress, the backends tried and the metrics labels.
//!
//! 1. `request_filter` takes a `max_connections` slot, checks header limits, and for a
//!    cacheable GET/HEAD computes the key and answers hits (and stale copies) itself.
//!    A miss either leads the fill for its key or waits for the one in flight.
//! 2. `upstream_peer` picks a backend not tried yet; none left → 503 or a stale copy.
//! 3. `fail_to_connect` / `error_while_proxy` / `upstream_response_filter` decide retries.
//! 4. `upstream_response_filter` invalidates tags after a successful write and decides
//!    whether the fill is stored; `response_filter` and `response_body_filter` collect the
//!    body, compress it once, store it and send the client the form it accepts.
//! 5. `logging` records the metrics; dropping the context releases the slot and the fill.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{Method, header};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::balancer::{Backend, Balancer, InFlight};
use crate::cache::encoding::{self, Accepts, Encoding};
use crate::cache::flight::{self, FillGuard, Join};
use crate::cache::policy::Lifetime;
use crate::cache::{self, Cache, Entry, Lookup};
use crate::config::EdgeConfig;
use crate::metrics;
use crate::refresh::{Refresh, Refresher};

/// What `X-Cache-Status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh entry (including after waiting for another request's fill).
    Hit,
    /// Not in the cache; fetched (and stored when cacheable).
    Miss,
    /// Served from an expired entry: inside stale-while-revalidate (a background refresh is
    /// fetching a new copy), or inside stale-if-error because every backend failed.
    Stale,
    /// An expired entry was there; fetched a new one.
    Expired,
    /// Not cacheable: method, route, `Authorization`/`Cookie`, or cache disabled.
    Bypass,
}

impl CacheStatus {
    /// Label values, indexed by `self as usize`.
    pub const LABELS: [&'static str; 5] = ["hit", "miss", "stale", "expired", "bypass"];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// The edge's `ProxyHttp`: balancer, cache and limits, shared by all requests.
pub struct Edge {
    pub balancer: Arc<Balancer>,
    pub cache: Arc<Cache>,
    pub config: Arc<EdgeConfig>,
    slots: Arc<Semaphore>,
    series: metrics::RequestSeries,
    refresher: Arc<Refresher>,
}

/// A `max_connections` slot, counted in `edge_active_connections` while held.
struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::ACTIVE_CONNECTIONS.dec();
    }
}

/// A fill's response while its body arrives.
struct Storing {
    header: ResponseHeader,
    lifetime: Lifetime,
    tags: Box<[Box<str>]>,
    body: BytesMut,
}

pub struct Ctx {
    start: Instant,
    slot: Option<Slot>,
    route: Option<usize>,
    status: CacheStatus,
    key: Option<Arc<str>>,
    accepts: Accepts,
    fill: Option<FillGuard>,
    fill_seq: u64,
    /// An expired entry still inside stale-if-error, served if every try fails.
    stale: Option<Arc<Entry>>,
    tried: Vec<usize>,
    backend: Option<Arc<Backend>>,
    in_flight: Option<InFlight>,
    attempt_started: Option<Instant>,
    upstream_started: Option<Instant>,
    no_backend: bool,
    storing: Option<Storing>,
    compress_to: Option<Encoding>,
    response_started: bool,
    response_status: u16,
}

fn is_idempotent_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

fn is_write(m: &Method) -> bool {
    m == Method::POST || m == Method::PUT || m == Method::DELETE || m == Method::PATCH
}

/// Request header bytes as they came on the wire, near enough: request line plus fields.
fn header_bytes(req: &RequestHeader) -> usize {
    // No `uri.to_string()`: that allocates on every request, hits included.
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    let line = req.method.as_str().len() + target + 12;
    line + req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

fn error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::SocketError => "connect",
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => "reset",
        ErrorType::HTTPStatus(_) => "status_5xx",
        _ => "other",
    }
}

impl Edge {
    pub fn new(config: Arc<EdgeConfig>, balancer: Arc<Balancer>, cache: Arc<Cache>) -> Self {
        let route_labels = config.cache.routes.iter().map(|r| {
            if r.prefix {
                format!("{}*", r.path)
            } else {
                r.path.clone()
            }
        });
        Edge {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            series: metrics::RequestSeries::new(route_labels.collect(), &CacheStatus::LABELS),
            refresher: Arc::new(Refresher::new(
                config.clone(),
                balancer.clone(),
                cache.clone(),
            )),
            balancer,
            cache,
            config,
        }
    }

    fn retries_left(&self, ctx: &Ctx) -> bool {
        ctx.tried.len() <= self.config.upstream.retries
    }

    /// Writes a stored response: the best encoding the client accepts, with `Age`.
    async fn serve_entry(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        entry: &Entry,
        status: CacheStatus,
    ) -> Result<()> {
        let (enc, body) = entry.body_for(ctx.accepts, &self.cache.compression);
        let mut h = entry.header.clone();
        h.insert_header(header::CONTENT_LENGTH, body.len())?;
        if let Some(v) = enc.header_value() {
            h.insert_header(header::CONTENT_ENCODING, v)?;
        }
        h.insert_header(header::AGE, entry.age(Instant::now()).as_secs())?;
        h.insert_header("x-cache-status", status.as_str())?;
        ctx.status = status;
        ctx.response_status = h.status.as_u16();
        ctx.response_started = true;
        let head = session.req_header().method == Method::HEAD;
        session.write_response_header(Box::new(h), head).await?;
        if !head {
            session
                .write_response_body(Some(body.clone()), true)
                .await?;
        }
        Ok(())
    }

    async fn respond_plain(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        body: &'static str,
        extra: &[(&'static str, String)],
    ) -> Result<()> {
        let mut h = ResponseHeader::build_no_case(status, Some(4 + extra.len()))?;
        h.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        h.insert_header(header::CONTENT_LENGTH, body.len())?;
        h.insert_header(header::CACHE_CONTROL, "no-store")?;
        h.insert_header("x-cache-status", ctx.status.as_str())?;
        for (k, v) in extra {
            h.insert_header(*k, v.as_str())?;
        }
        ctx.response_status = status;
        ctx.response_started = true;
        let head = session.req_header().method == Method::HEAD;
        session.write_response_header(Box::new(h), head).await?;
        if !head {
            session
                .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
                .await?;
        }
        Ok(())
    }

    /// Takes a slot, waiting up to `max_connections_wait`; false when none came free.
    async fn take_slot(&self, ctx: &mut Ctx) -> bool {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => tokio::time::timeout(
                self.config.max_connections_wait,
                self.slots.clone().acquire_owned(),
            )
            .await
            .ok()
            .and_then(|r| r.ok()),
        };
        match permit {
            Some(p) => {
                metrics::ACTIVE_CONNECTIONS.inc();
                ctx.slot = Some(Slot(p));
                true
            }
            None => false,
        }
    }

    /// The cache part of `request_filter`; true when a response was sent.
    async fn cache_lookup(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        key: Arc<str>,
    ) -> Result<bool> {
        let head = session.req_header().method == Method::HEAD;
        for round in 0..2 {
            match self.cache.lookup(&key) {
                Lookup::Fresh(entry) => {
                    self.serve_entry(session, ctx, &entry, CacheStatus::Hit)
                        .await?;
                    return Ok(true);
                }
                Lookup::Stale {
                    entry,
                    revalidate,
                    if_error,
                } => {
                    ctx.status = CacheStatus::Expired;
                    if revalidate {
                        // Answered from the stale copy; the first such request starts a
                        // background refresh holding the key's fill lock, so there is one
                        // refresh per key however many requests arrive meanwhile.
                        if let Join::Leader(guard) = self.cache.join_fill(&key) {
                            let req = session.req_header();
                            self.refresher.spawn(Refresh {
                                key: key.clone(),
                                uri: req
                                    .uri
                                    .path_and_query()
                                    .map_or("/", |p| p.as_str())
                                    .to_owned(),
                                host: req
                                    .headers
                                    .get(header::HOST)
                                    .and_then(|h| h.to_str().ok())
                                    .map(str::to_owned),
                                route: ctx.route,
                                guard,
                            });
                        }
                        self.serve_entry(session, ctx, &entry, CacheStatus::Stale)
                            .await?;
                        return Ok(true);
                    }
                    ctx.stale = if_error.then_some(entry);
                }
                Lookup::Miss => {
                    if ctx.status != CacheStatus::Expired {
                        ctx.status = CacheStatus::Miss;
                    }
                }
            }
            if head {
                // A HEAD response has no body to store; it is passed through.
                return Ok(false);
            }
            match self.cache.join_fill(&key) {
                Join::Leader(guard) => {
                    ctx.fill_seq = self.cache.fill_started();
                    ctx.fill = Some(guard);
                    return Ok(false);
                }
                Join::Follower(rx) => {
                    if round == 0 && flight::follow(rx, self.cache.config.lock_timeout).await {
                        metrics::CACHE_COALESCED.inc();
                        continue;
                    }
                    // The fill took too long or was not cacheable: go upstream alone.
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    /// No downstream modules: the edge compresses at fill time itself, and Pingora's
    /// (disabled) compression module would still run on every response.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            slot: None,
            route: None,
            status: CacheStatus::Bypass,
            key: None,
            accepts: Accepts::default(),
            fill: None,
            fill_seq: 0,
            stale: None,
            tried: Vec::new(),
            backend: None,
            in_flight: None,
            attempt_started: None,
            upstream_started: None,
            no_backend: false,
            storing: None,
            compress_to: None,
            response_started: false,
            response_status: 0,
        }
    }

    /// Runs first for every request. Returns `Ok(true)` when it answered (hit, stale,
    /// overload, header too large) and `Ok(false)` to go upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Between requests on this connection, the next header must arrive within this.
        session.set_keepalive(Some(self.config.header_read_timeout.as_secs().max(1)));
        if !self.take_slot(ctx).await {
            metrics::REJECTED.with_label_values(&["overload"]).inc();
            session.set_keepalive(None);
            self.respond_plain(
                session,
                ctx,
                503,
                "edge overloaded\n",
                &[("retry-after", "1".into())],
            )
            .await?;
            return Ok(true);
        }
        let req = session.req_header();
        if req.headers.len() > self.config.max_headers
            || header_bytes(req) > self.config.max_header_bytes
        {
            metrics::REJECTED
                .with_label_values(&["header_too_large"])
                .inc();
            session.set_keepalive(None);
            self.respond_plain(session, ctx, 431, "request header fields too large\n", &[])
                .await?;
            return Ok(true);
        }
        let method = &req.method;
        if !self.cache.config.enabled || !is_idempotent_read(method) {
            return Ok(false);
        }
        let path = req.uri.path();
        let Some(route) = self
            .cache
            .config
            .routes
            .iter()
            .position(|r| r.matches(path))
        else {
            return Ok(false);
        };
        ctx.route = Some(route);
        if req.headers.contains_key(header::AUTHORIZATION)
            || req.headers.contains_key(header::COOKIE)
        {
            return Ok(false);
        }
        ctx.accepts = encoding::parse_accept_encoding(
            req.headers
                .get(header::ACCEPT_ENCODING)
                .map(|v| v.as_bytes()),
        );
        let key: Arc<str> =
            cache::key::cache_key(path, req.uri.query(), &self.cache.config.routes[route]).into();
        ctx.key = Some(key.clone());
        self.cache_lookup(session, ctx, key).await
    }

    /// Picks the backend for this try: never one already tried for this request. With none
    /// left, the request fails with "no backend" and `fail_to_proxy` answers.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let now = Instant::now();
        let started = *ctx.upstream_started.get_or_insert(now);
        let left = self
            .config
            .upstream
            .total_timeout
            .saturating_sub(now - started);
        if left.is_zero() {
            return Err(Error::explain(
                ErrorType::ReadTimedout,
                "upstream.timeouts.total exhausted",
            )
            .into_up());
        }
        let Some(backend) = self.balancer.select(&ctx.tried) else {
            ctx.no_backend = true;
            return Err(
                Error::explain(ErrorType::ConnectNoRoute, "no backend available").into_up(),
            );
        };
        ctx.tried.push(backend.index);
        ctx.in_flight = Some(self.balancer.start(&backend));
        ctx.attempt_started = Some(now);
        let u = &self.config.upstream;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(u.connect_timeout.min(left));
        peer.options.read_timeout = Some(u.read_timeout.min(left));
        peer.options.write_timeout = Some(u.write_timeout.min(left));
        peer.options.idle_timeout = Some(u.keepalive_timeout);
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    /// A fill asks for identity: the edge compresses once itself and stores every form.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.fill.is_some() {
            // A fill needs the full 200 in identity: the edge compresses it itself, and a 304
            // to one client's validators would leave nothing to store.
            upstream_request.remove_header(&header::ACCEPT_ENCODING);
            upstream_request.remove_header(&header::IF_NONE_MATCH);
            upstream_request.remove_header(&header::IF_MODIFIED_SINCE);
        }
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = addr.ip().to_string();
            let xff = match upstream_request
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip,
            };
            upstream_request.insert_header("x-forwarded-for", xff)?;
        }
        Ok(())
    }

    /// Connecting failed: the request never reached the API, so any method may try another
    /// backend.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(b) = ctx.backend.take() {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[&b.label, "connect"])
                .inc();
            self.balancer.report_failure(&b);
        }
        ctx.in_flight = None;
        if self.retries_left(ctx) {
            metrics::RETRIES.with_label_values(&["connect"]).inc();
            e.set_retry(true);
        }
        e
    }

    /// An error after connecting (timeout, reset, a 5xx turned into an error by
    /// `upstream_response_filter`): GET/HEAD retry on another backend while nothing was sent
    /// to the client; other methods only when a pooled connection turned out closed before
    /// the request was written (Pingora's `ReusedOnly`), which the API never saw.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let upstream_side = e.esource() == &ErrorSource::Upstream;
        let kind = error_kind(&e);
        // 5xx statuses were counted when the header arrived.
        if upstream_side
            && kind != "status_5xx"
            && let Some(b) = &ctx.backend
        {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[&b.label, kind])
                .inc();
            self.balancer.report_failure(b);
        }
        ctx.in_flight = None;
        let can_retry = upstream_side && !ctx.response_started && self.retries_left(ctx);
        if can_retry && is_idempotent_read(&session.req_header().method) {
            metrics::RETRIES.with_label_values(&[kind]).inc();
            e.set_retry(true);
        } else if can_retry && session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else if can_retry {
            e.retry.decide_reuse(client_reused);
            if e.retry() {
                // The same backend may take it again: it never saw the request.
                ctx.tried.pop();
                metrics::RETRIES
                    .with_label_values(&["reused_connection"])
                    .inc();
            }
        } else {
            e.set_retry(false);
        }
        e
    }

    /// The backend's response header, before anything goes to the client. 502/503/504 on a
    /// GET/HEAD become a retry on another backend; a successful write invalidates its
    /// `Surrogate-Key` tags here, before the client sees the answer; a fill decides whether
    /// it will be stored.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.storing = None;
        if let (Some(b), Some(t)) = (&ctx.backend, ctx.attempt_started) {
            metrics::UPSTREAM_DURATION
                .with_label_values(&[&b.label])
                .observe(t.elapsed().as_secs_f64());
            if matches!(status, 502..=504) {
                metrics::UPSTREAM_ERRORS
                    .with_label_values(&[&b.label, "status_5xx"])
                    .inc();
                self.balancer.report_failure(b);
            } else {
                self.balancer.report_success(b);
            }
        }
        let method = session.req_header().method.clone();
        if matches!(status, 502..=504) && is_idempotent_read(&method) {
            let another = self.retries_left(ctx) && self.balancer.select(&ctx.tried).is_some();
            if another || ctx.stale.is_some() {
                let mut e =
                    Error::explain(ErrorType::HTTPStatus(status), "backend answered with a 5xx");
                e.set_retry(another);
                return Err(e.into_up());
            }
        }
        if is_write(&method) && (200..300).contains(&status) {
            let tags = cache::surrogate_keys(upstream_response);
            if !tags.is_empty() {
                let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
                self.cache.purge_tags(&tags);
                metrics::CACHE_PURGES.with_label_values(&["write"]).inc();
            }
        }
        if ctx.fill.is_some() {
            match self.cache.storable(ctx.route, upstream_response) {
                Some(lifetime) => {
                    let length: Option<usize> = upstream_response
                        .headers
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    ctx.storing = Some(Storing {
                        header: upstream_response.clone(),
                        lifetime,
                        tags: cache::surrogate_keys(upstream_response),
                        body: BytesMut::with_capacity(length.unwrap_or(4096)),
                    });
                }
                None => {
                    // Not cacheable: let the waiting requests go upstream now.
                    ctx.fill = None;
                }
            }
        }
        Ok(())
    }

    /// The header the client gets: `Surrogate-Key` removed, `X-Cache-Status` added, and for
    /// a fill the client's preferred encoding chosen (the body is compressed when complete).
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.response_status = resp.status.as_u16();
        ctx.response_started = true;
        resp.remove_header("surrogate-key");
        resp.insert_header("x-cache-status", ctx.status.as_str())?;
        let compression = &self.cache.compression;
        if ctx.key.is_some() && compression.enabled {
            resp.insert_header(header::VARY, "Accept-Encoding")?;
        }
        if let Some(st) = &ctx.storing {
            let length: Option<usize> = resp
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let preferred = compression
                .encodings
                .iter()
                .map(|&n| Encoding::from(n))
                .find(|&e| ctx.accepts.allows(e));
            if let Some(enc) = preferred
                && compression.enabled
                && length.is_some_and(|l| l >= compression.min_size)
                && cache::is_compressible(&st.header)
                && session.req_header().method != Method::HEAD
            {
                ctx.compress_to = Some(enc);
                resp.remove_header(&header::CONTENT_LENGTH);
                resp.insert_header(
                    header::CONTENT_ENCODING,
                    enc.header_value().unwrap_or("identity"),
                )?;
                resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            }
        }
        Ok(())
    }

    /// Collects a fill's body; at its end builds the entry (compressing once), stores it,
    /// wakes the waiting requests and, when the client takes a compressed form, sends that.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let Some(st) = ctx.storing.as_mut() else {
            return Ok(None);
        };
        if let Some(chunk) = body.as_ref() {
            if st.body.len() + chunk.len() > self.cache.config.max_object_size
                && ctx.compress_to.is_none()
            {
                ctx.storing = None;
                ctx.fill = None;
                return Ok(None);
            }
            st.body.extend_from_slice(chunk);
        }
        if ctx.compress_to.is_some() {
            *body = None;
        }
        if !end_of_stream {
            return Ok(None);
        }
        let st = ctx.storing.take().expect("checked above");
        let key = ctx.key.clone().expect("a fill has a key");
        let entry = cache::build_entry(
            key.len(),
            &st.header,
            st.body.freeze(),
            st.lifetime,
            st.tags,
            ctx.fill_seq,
            &self.cache.compression,
        );
        if let Some(enc) = ctx.compress_to {
            let out = entry
                .compressed(enc, &self.cache.compression)
                .or_else(|| encoding::compress(enc, &entry.identity, &self.cache.compression))
                .ok_or_else(|| Error::explain(ErrorType::InternalError, "compression failed"))?;
            *body = Some(out);
        }
        self.cache.store(key, entry);
        ctx.fill = None;
        Ok(None)
    }

    /// Every try failed (or no backend was left): a stale copy inside stale-if-error if
    /// there is one, else 503 with `Retry-After` when no backend is up, else 502/504.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        ctx.in_flight = None;
        ctx.storing = None;
        ctx.fill = None;
        if ctx.response_started || session.response_written().is_some() {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        // Pingora closes the connection after a proxy failure: say so, or a client may send
        // its next request on a connection that is going away.
        session.set_keepalive(None);
        if let Some(stale) = ctx.stale.take()
            && self
                .serve_entry(session, ctx, &stale, CacheStatus::Stale)
                .await
                .is_ok()
        {
            return FailToProxy {
                error_code: 200,
                can_reuse_downstream: false,
            };
        }
        let (code, body) = if ctx.no_backend {
            (503, "no backend available\n")
        } else {
            match (e.esource(), e.etype()) {
                (ErrorSource::Downstream, _) => (0, ""),
                (_, ErrorType::HTTPStatus(s)) => (*s, "upstream error\n"),
                (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::ConnectTimedout) => {
                    (504, "upstream timed out\n")
                }
                (ErrorSource::Upstream, _) => (502, "upstream failed\n"),
                _ => (500, "internal error\n"),
            }
        };
        if code == 0 {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let retry_after = self.balancer.retry_after().as_secs().to_string();
        let extra = [("retry-after", retry_after)];
        let extra: &[(&str, String)] = if code == 503 { &extra } else { &[] };
        let _ = self.respond_plain(session, ctx, code, body, extra).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Runs once per request, errors included: the metrics.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.fill = None;
        ctx.in_flight = None;
        let status = session
            .response_written()
            .map(|h| h.status.as_u16())
            .unwrap_or(ctx.response_status);
        self.series.observe(
            ctx.route,
            session.req_header().method.as_str(),
            status,
            ctx.status as usize,
            ctx.start.elapsed().as_secs_f64(),
        );
        if let Some(e) = e {
            tracing::debug!(error = %e, status, "request failed");
        }
    }
}
