//! The edge's request flow as Pingora [`ProxyHttp`] hooks. Per request, [`Ctx`] carries the
//! cache decision and fill, the upstream tries, and what was sent to the client.
//!
//! 1. `request_filter` marks the header as received (ending its deadline, see
//!    [`crate::downstream`]), refuses ambiguous framing ([`crate::framing`]) and oversized
//!    headers, and for a cacheable GET/HEAD computes the key and answers hits (and stale
//!    copies) itself: a hit takes no upstream capacity and waits for nothing upstream. A miss
//!    either leads the fill for its key or waits for the one in flight.
//! 2. `upstream_peer` takes an in-flight slot at a backend not tried yet, queueing (bounded)
//!    while every candidate is at `upstream.max_in_flight`; none → a stale copy or 503.
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
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::balancer::{Backend, Balancer, InFlight, Unavailable};
use crate::cache::encoding::{self, Accepts, Encoding};
use crate::cache::flight::{self, FillGuard, Join};
use crate::cache::policy::Lifetime;
use crate::cache::{self, Cache, Entry, Lookup};
use crate::config::EdgeConfig;
use crate::downstream::{self, Guarded, Protocol};
use crate::fetch::Fetcher;
use crate::forwarded;
use crate::framing;
use crate::headers::{self, RETRY_AFTER, SURROGATE_KEY, Scan, X_CACHE_STATUS};
use crate::metrics;
use crate::refresh::{Refresh, Refresher};
use crate::upstream::{self, Failure};

/// What `X-Cache-Status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh entry (including after waiting for another request's fill).
    Hit,
    /// Not in the cache; fetched (and stored when cacheable).
    Miss,
    /// Served from an expired entry: inside stale-while-revalidate (a background refresh is
    /// fetching a new copy), or inside stale-if-error because no backend could answer.
    Stale,
    /// An expired entry was there; fetched a new one.
    Expired,
    /// Not cacheable: method, route, `Authorization`/`Cookie`, a repeated key parameter, or
    /// cache disabled.
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
    series: Arc<metrics::RequestSeries>,
    refresher: Arc<Refresher>,
    /// Upstream GETs outside a proxy session: background refreshes and the fast miss path.
    fetcher: Arc<Fetcher>,
}

/// A fill's response while its body arrives.
struct Storing {
    header: ResponseHeader,
    lifetime: Lifetime,
    tags: Box<[Box<str>]>,
    body: BytesMut,
}

/// The cache's view of one request.
struct CacheCtx {
    /// Index of the matching `cache.routes` rule (also the metrics' route label).
    route: Option<usize>,
    status: CacheStatus,
    key: Option<Arc<str>>,
    /// The client's `Accept-Encoding`, parsed once.
    accepts: Accepts,
    /// Held while this request fills its key; dropping it wakes the followers.
    fill: Option<FillGuard>,
    /// The purge sequence number when the fill started (see `cache/mod.rs`).
    fill_seq: u64,
    /// An expired entry still inside stale-if-error, served if no backend can answer.
    stale: Option<Arc<Entry>>,
    /// The fill's response while its body arrives.
    storing: Option<Storing>,
    /// The encoding the filling client gets, compressed once the body is complete.
    compress_to: Option<Encoding>,
}

/// The upstream tries of one request.
#[derive(Default)]
struct UpstreamCtx {
    /// When the first try started: `upstream.timeouts.total` counts from here.
    started: Option<Instant>,
    /// Backends tried, by index; a retry never picks one of them again.
    tried: Vec<usize>,
    /// The current try's in-flight slot at its backend.
    slot: Option<InFlight>,
    /// When the current try started, for `edge_upstream_response_seconds`.
    try_started: Option<Instant>,
    /// Why no backend could be given, when none could.
    unavailable: Option<Unavailable>,
}

impl UpstreamCtx {
    fn backend(&self) -> Option<&Arc<Backend>> {
        self.slot.as_ref().map(InFlight::backend)
    }

    /// Ends the current try (its slot goes back), returning its backend.
    fn end_try(&mut self) -> Option<Arc<Backend>> {
        self.slot.take().map(|s| s.backend().clone())
    }
}

/// Per-request state, from the request header to `logging`.
pub struct Ctx {
    /// When the request header was in, for `edge_request_duration_seconds`.
    start: Instant,
    cache: CacheCtx,
    upstream: UpstreamCtx,
    /// Whether a response header went to the client (no retry, no error page after it).
    response_started: bool,
    /// The status sent, for the metrics when Pingora has no record of it.
    response_status: u16,
}

/// What a client is told when the backends failed it (no stale copy to serve): a status
/// turned into an error keeps its code, a timeout is 504, anything else 502. Shared by the
/// proxy path and the fast miss path.
pub(crate) fn upstream_failure_answer(t: &ErrorType) -> (u16, &'static str) {
    match t {
        ErrorType::HTTPStatus(s) => (*s, "upstream error\n"),
        ErrorType::ReadTimedout | ErrorType::ConnectTimedout => (504, "upstream timed out\n"),
        _ => (502, "upstream failed\n"),
    }
}

fn is_idempotent_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

fn is_write(m: &Method) -> bool {
    m == Method::POST || m == Method::PUT || m == Method::DELETE || m == Method::PATCH
}

/// Pingora's error types for a request body whose chunked framing is broken.
fn is_bad_body_framing(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::Custom("InvalidChunk") | ErrorType::Custom("InvalidTrailerEnd")
    )
}

impl Unavailable {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Unavailable::NoBackend => "no backend available\n",
            Unavailable::QueueFull | Unavailable::QueueTimeout => "all backends busy\n",
        }
    }
}

impl Edge {
    pub fn new(config: Arc<EdgeConfig>, balancer: Arc<Balancer>, cache: Arc<Cache>) -> Self {
        let route_labels = config.cache.routes.iter().map(|r| r.label());
        let fetcher = Arc::new(Fetcher::new(config.clone(), balancer.clone()));
        Edge {
            series: Arc::new(metrics::RequestSeries::new(
                route_labels.collect(),
                &CacheStatus::LABELS,
            )),
            refresher: Arc::new(Refresher::new(
                config.clone(),
                balancer.clone(),
                cache.clone(),
                fetcher.clone(),
            )),
            fetcher,
            balancer,
            cache,
            config,
        }
    }

    /// What the downstream loop needs to answer fresh hits without a proxy session.
    pub fn hit_path(&self) -> crate::downstream::HitPath {
        crate::downstream::HitPath {
            cache: self.cache.clone(),
            config: self.config.clone(),
            series: self.series.clone(),
            balancer: self.balancer.clone(),
            fetcher: self.fetcher.clone(),
        }
    }

    fn retries_left(&self, ctx: &Ctx) -> bool {
        ctx.upstream.tried.len() <= self.config.upstream.retries.attempts
    }

    /// Writes a stored response: the best encoding the client accepts, with `Age`.
    async fn serve_entry(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        entry: &Entry,
        status: CacheStatus,
    ) -> Result<()> {
        let (enc, body) = entry.body_for(ctx.cache.accepts, &self.cache.compression);
        let mut h = entry.header.clone();
        h.insert_header(header::CONTENT_LENGTH, body.len())?;
        if let Some(v) = enc.header_value() {
            h.insert_header(header::CONTENT_ENCODING, v)?;
        }
        h.insert_header(header::AGE, entry.age(Instant::now()).as_secs())?;
        h.insert_header(X_CACHE_STATUS, status.as_str())?;
        ctx.cache.status = status;
        ctx.response_status = h.status.as_u16();
        ctx.response_started = true;
        let head = session.req_header().method == Method::HEAD;
        session.write_response_header(Box::new(h), head).await?;
        if !head {
            session.write_response_body(Some(body), true).await?;
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
        h.insert_header(X_CACHE_STATUS, ctx.cache.status.as_str())?;
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

    /// Refuses a request and closes the connection after the answer.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        reason: &'static str,
        body: &'static str,
    ) -> Result<bool> {
        metrics::REJECTED.with_label_values(&[reason]).inc();
        session.set_keepalive(None);
        self.respond_plain(session, ctx, status, body, &[]).await?;
        Ok(true)
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
                    ctx.cache.status = CacheStatus::Expired;
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
                                route: ctx.cache.route,
                                guard,
                            });
                        }
                        self.serve_entry(session, ctx, &entry, CacheStatus::Stale)
                            .await?;
                        return Ok(true);
                    }
                    ctx.cache.stale = if_error.then_some(entry);
                }
                Lookup::Miss => {
                    if ctx.cache.status != CacheStatus::Expired {
                        ctx.cache.status = CacheStatus::Miss;
                    }
                }
            }
            if head {
                // A HEAD response has no body to store; it is passed through.
                return Ok(false);
            }
            match self.cache.join_fill(&key) {
                Join::Leader(guard) => {
                    ctx.cache.fill_seq = self.cache.fill_started();
                    ctx.cache.fill = Some(guard);
                    return Ok(false);
                }
                Join::Follower(rx) => {
                    if round == 0 && flight::follow(rx, self.cache.config.lock_timeout.get()).await
                    {
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
            cache: CacheCtx {
                route: None,
                status: CacheStatus::Bypass,
                key: None,
                accepts: Accepts::default(),
                fill: None,
                fill_seq: 0,
                stale: None,
                storing: None,
                compress_to: None,
            },
            upstream: UpstreamCtx::default(),
            response_started: false,
            response_status: 0,
        }
    }

    /// Runs first for every request. Returns `Ok(true)` when it answered (hit, stale, a
    /// refused request) and `Ok(false)` to go upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(g) = session.stream().and_then(Guarded::of) {
            g.header_received();
        }
        let req = session.req_header();
        let scan = Scan::of(req);
        let raw = scan
            .transfer_encoding
            .and_then(|_| session.as_http1().map(|h1| h1.get_headers_raw_bytes()));
        if let Err(r) = framing::check(req, &scan, raw.as_deref()) {
            return self
                .refuse(session, ctx, r.status, r.reason, r.message)
                .await;
        }
        if scan.fields > self.config.listen.max_headers
            || scan.bytes > self.config.listen.max_header_bytes.bytes() as usize
        {
            return self
                .refuse(
                    session,
                    ctx,
                    431,
                    "header_too_large",
                    "request header fields too large\n",
                )
                .await;
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
        ctx.cache.route = Some(route);
        if scan.credentials {
            return Ok(false);
        }
        let Some(key) =
            cache::key::cache_key(path, req.uri.query(), &self.cache.config.routes[route])
        else {
            // A key parameter given twice: the origin decides what that means, uncached.
            return Ok(false);
        };
        ctx.cache.accepts = encoding::parse_accept_encoding(scan.accept_encoding);
        let key: Arc<str> = key.into();
        ctx.cache.key = Some(key.clone());
        self.cache_lookup(session, ctx, key).await
    }

    /// Takes an in-flight slot at a backend not tried yet for this request, waiting in the
    /// queue while every candidate is at `upstream.max_in_flight`. With none, the request
    /// fails and `fail_to_proxy` answers (a stale copy, else 503).
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let now = Instant::now();
        let u = &self.config.upstream;
        let started = *ctx.upstream.started.get_or_insert(now);
        let left = u.timeouts.total.get().saturating_sub(now - started);
        if left.is_zero() {
            return Err(Error::explain(
                ErrorType::ReadTimedout,
                "upstream.timeouts.total exhausted",
            )
            .into_up());
        }
        let deadline = now + u.queue_timeout.get().min(left);
        let slot = match self.balancer.acquire(&ctx.upstream.tried, deadline).await {
            Ok(slot) => slot,
            Err(why) => {
                ctx.upstream.unavailable = Some(why);
                return Err(Error::explain(ErrorType::ConnectNoRoute, why.message()).into_up());
            }
        };
        let backend = slot.backend();
        ctx.upstream.tried.push(backend.index);
        // GET and HEAD are retried elsewhere after the shorter per-try timeout.
        let read = if is_idempotent_read(&session.req_header().method) {
            u.timeouts.per_try.get()
        } else {
            u.timeouts.read.get()
        };
        let left = u.timeouts.total.get().saturating_sub(started.elapsed());
        let peer = upstream::peer(backend, u, read, left);
        ctx.upstream.slot = Some(slot);
        ctx.upstream.try_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// A fill asks for identity: the edge compresses once itself and stores every form.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.cache.fill.is_some() {
            // A fill needs the full 200 in identity: the edge compresses it itself, and a 304
            // to one client's validators would leave nothing to store.
            upstream_request.remove_header(&header::ACCEPT_ENCODING);
            upstream_request.remove_header(&header::IF_NONE_MATCH);
            upstream_request.remove_header(&header::IF_MODIFIED_SINCE);
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = Protocol::of(session).is_tls();
        forwarded::apply(upstream_request, peer, tls, &self.config.forwarded)
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
        if let Some(b) = ctx.upstream.end_try() {
            Failure::Connect.count(&b);
            self.balancer.report_failure(&b);
        }
        if self.retries_left(ctx) {
            metrics::RETRIES.with_label_values(&["connect"]).inc();
            e.set_retry(true);
        }
        e
    }

    /// An error after connecting (timeout, reset, a 5xx turned into an error by
    /// `upstream_response_filter`): GET/HEAD retry on another backend while nothing was sent
    /// to the client; other methods only when a pooled keep-alive connection turned out
    /// closed before the request was written (Pingora's `ReusedOnly`), which the API never saw.
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
        let failure = Failure::of(&e);
        let backend = ctx.upstream.end_try();
        // 5xx statuses were counted when the header arrived.
        if upstream_side
            && failure != Failure::Status5xx
            && let Some(b) = &backend
        {
            failure.count(b);
            self.balancer.report_failure(b);
        }
        let can_retry = upstream_side && !ctx.response_started && self.retries_left(ctx);
        if can_retry && is_idempotent_read(&session.req_header().method) {
            metrics::RETRIES.with_label_values(&[failure.label()]).inc();
            e.set_retry(true);
        } else if can_retry && session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else if can_retry {
            e.retry.decide_reuse(client_reused);
            if e.retry() {
                // The same backend may take it again: it never saw the request.
                ctx.upstream.tried.pop();
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
        ctx.cache.storing = None;
        if let (Some(b), Some(t)) = (ctx.upstream.backend(), ctx.upstream.try_started) {
            metrics::UPSTREAM_DURATION
                .with_label_values(&[&b.label])
                .observe(t.elapsed().as_secs_f64());
            if matches!(status, 502..=504) {
                Failure::Status5xx.count(b);
                self.balancer.report_failure(b);
            } else {
                self.balancer.report_success(b);
            }
        }
        let method = &session.req_header().method;
        if matches!(status, 502..=504) && is_idempotent_read(method) {
            let another = self.retries_left(ctx) && self.balancer.has_untried(&ctx.upstream.tried);
            if another || ctx.cache.stale.is_some() {
                let mut e =
                    Error::explain(ErrorType::HTTPStatus(status), "backend answered with a 5xx");
                e.set_retry(another);
                return Err(e.into_up());
            }
        }
        if is_write(method) && (200..300).contains(&status) {
            let tags = cache::surrogate_keys(upstream_response);
            if !tags.is_empty() {
                let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
                metrics::CACHE_PURGES.with_label_values(&["write"]).inc();
                // The client's answer waits until the other edges have purged too (bounded):
                // what it reads next, through any edge, shows its write.
                self.cache.purge_tags(&tags).await;
            }
        }
        if ctx.cache.fill.is_some() {
            match self.cache.storable(ctx.cache.route, upstream_response) {
                Some(lifetime) => {
                    let length = headers::content_length(&upstream_response.headers);
                    ctx.cache.storing = Some(Storing {
                        header: upstream_response.clone(),
                        lifetime,
                        tags: cache::surrogate_keys(upstream_response),
                        body: BytesMut::with_capacity(length.unwrap_or(4096)),
                    });
                }
                None => {
                    // Not cacheable: let the waiting requests go upstream now.
                    ctx.cache.fill = None;
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
        resp.remove_header(SURROGATE_KEY);
        resp.insert_header(X_CACHE_STATUS, ctx.cache.status.as_str())?;
        let compression = &self.cache.compression;
        if ctx.cache.key.is_some() && compression.enabled {
            resp.insert_header(header::VARY, "Accept-Encoding")?;
        }
        if let Some(st) = &ctx.cache.storing {
            let length = headers::content_length(&resp.headers);
            let preferred = compression
                .encodings
                .iter()
                .map(|&n| Encoding::from(n))
                .find(|&e| ctx.cache.accepts.allows(e));
            if let Some(enc) = preferred
                && compression.enabled
                && length.is_some_and(|l| l >= compression.min_bytes())
                && cache::is_compressible(&st.header)
                && session.req_header().method != Method::HEAD
            {
                ctx.cache.compress_to = Some(enc);
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
        let c = &mut ctx.cache;
        let Some(st) = c.storing.as_mut() else {
            return Ok(None);
        };
        if let Some(chunk) = body.as_ref() {
            if st.body.len() + chunk.len() > self.cache.config.max_object_bytes()
                && c.compress_to.is_none()
            {
                c.storing = None;
                c.fill = None;
                return Ok(None);
            }
            st.body.extend_from_slice(chunk);
        }
        if c.compress_to.is_some() {
            *body = None;
        }
        if !end_of_stream {
            return Ok(None);
        }
        let (Some(st), Some(key)) = (c.storing.take(), c.key.clone()) else {
            return Ok(None);
        };
        let entry = cache::build_entry(
            key.len(),
            &st.header,
            st.body.freeze(),
            st.lifetime,
            st.tags,
            c.fill_seq,
            &self.cache.compression,
        );
        if let Some(enc) = c.compress_to {
            let out = entry
                .compressed(enc, &self.cache.compression)
                .or_else(|| encoding::compress(enc, &entry.identity, &self.cache.compression))
                .ok_or_else(|| Error::explain(ErrorType::InternalError, "compression failed"))?;
            *body = Some(out);
        }
        self.cache.store(key, entry);
        c.fill = None;
        Ok(None)
    }

    /// Every try failed, no backend could be given, or the client's body was malformed: a
    /// stale copy inside stale-if-error if there is one, else 503 with `Retry-After` when no
    /// backend could take the request, else 400/502/504.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        ctx.upstream.slot = None;
        ctx.cache.storing = None;
        ctx.cache.fill = None;
        let gone = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        if ctx.response_started || session.response_written().is_some() {
            return gone;
        }
        // Pingora closes the connection after a proxy failure: say so, or a client may send
        // its next request on a connection that is going away.
        session.set_keepalive(None);
        let client_fault = e.esource() == &ErrorSource::Downstream;
        if !client_fault
            && let Some(stale) = ctx.cache.stale.take()
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
        let (code, body) = match (ctx.upstream.unavailable, e.esource(), e.etype()) {
            (Some(why), _, _) => (503, why.message()),
            (_, ErrorSource::Downstream, _) if is_bad_body_framing(e) => {
                metrics::REJECTED.with_label_values(&["bad_request"]).inc();
                (400, "malformed chunked request body\n")
            }
            // The client went away: nobody to answer.
            (_, ErrorSource::Downstream, _) => return gone,
            (_, ErrorSource::Upstream, t) | (_, _, t @ ErrorType::HTTPStatus(_)) => {
                upstream_failure_answer(t)
            }
            _ => (500, "internal error\n"),
        };
        let retry_after = self.balancer.retry_after().as_secs().to_string();
        let extra = [(RETRY_AFTER, retry_after)];
        let extra: &[(&str, String)] = if code == 503 { &extra } else { &[] };
        let _ = self.respond_plain(session, ctx, code, body, extra).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client that goes away is not an edge error: counted, logged at debug only.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, error: &Error) -> bool {
        if error.esource() != &ErrorSource::Downstream {
            return false;
        }
        if !is_bad_body_framing(error) {
            let phase = if ctx.response_started {
                "response"
            } else {
                "body"
            };
            metrics::CLIENT_ABORTS.with_label_values(&[phase]).inc();
        }
        tracing::debug!(error = %error, "client side of a request failed");
        true
    }

    /// Retried failures are counted in `edge_upstream_errors_total` and `edge_retries_total`;
    /// a frozen backend would otherwise log a warning per request.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Ctx,
        error: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        tracing::debug!(error = %error, "try failed, retrying");
        true
    }

    /// Runs once per request, errors included: the metrics.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.cache.fill = None;
        ctx.upstream.slot = None;
        let status = session
            .response_written()
            .map(|h| h.status.as_u16())
            .unwrap_or(ctx.response_status);
        self.series.observe(
            ctx.cache.route,
            session.req_header().method.as_str(),
            status,
            ctx.cache.status as usize,
            Protocol::of(session) as usize,
            ctx.start.elapsed().as_secs_f64(),
        );
        if let Some(e) = e {
            if e.esource() == &ErrorSource::Downstream {
                downstream::request_aborted();
            }
            tracing::debug!(error = %e, status, "request failed");
        }
    }
}
