//! The internal listener: `GET /metrics` (Prometheus, served by `pingora-prometheus` from
//! the global registry), `GET /healthz`, `GET /backends`, and `POST /purge` with
//! `Authorization: Bearer <admin.token>`:
//! - `/purge?tag=product-2` (repeatable): every entry carrying a tag;
//! - `/purge?url=%2Freviews%3Fproduct_id%3D2`: the entry of one URL (keyed by the route rules);
//! - `/purge?all=true`: everything.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_prometheus::PrometheusHttpApp;

use crate::balancer::Balancer;
use crate::cache::{Cache, key::cache_key};
use crate::metrics;
use reviews_shared::invalidation::Confirmation;

pub struct Admin {
    pub cache: Arc<Cache>,
    pub balancer: Arc<Balancer>,
    pub token: Option<String>,
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Vec<u8>> {
    let body = body.into().into_bytes();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static parts")
}

fn json(body: String) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static parts")
}

impl Admin {
    /// Brings the gauges that are read rather than counted up to date.
    pub fn refresh_gauges(&self) {
        self.cache.sync();
        metrics::CACHE_BYTES.set(self.cache.weighted_size() as i64);
        metrics::CACHE_ENTRIES.set(self.cache.entry_count() as i64);
        metrics::CACHE_MAX_BYTES.set(self.cache.config.max_size.bytes() as i64);
        if let Some(n) = metrics::open_fds() {
            metrics::OPEN_FDS.set(n);
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            metrics::NOFILE_LIMIT.set(soft as i64);
        }
        for b in self.balancer.backends() {
            self.balancer.refresh_gauge(b);
        }
    }

    fn backends_json(&self) -> String {
        let items: Vec<String> = self
            .balancer
            .backends()
            .iter()
            .map(|b| {
                format!(
                    r#"{{"address":"{}","weight":{},"healthy":{},"ejected":{},"in_flight":{}}}"#,
                    b.label,
                    b.weight,
                    b.is_healthy(),
                    self.balancer.is_ejected(b),
                    b.outstanding()
                )
            })
            .collect();
        format!("[{}]\n", items.join(","))
    }

    async fn purge(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                "purging is disabled: set admin.token\n",
            );
        };
        let presented = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
        }
        let params: Vec<(String, String)> = req
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let tags: Vec<&str> = params
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.as_str())
            .collect();
        if params.iter().any(|(k, v)| k == "all" && v == "true") {
            metrics::CACHE_PURGES.with_label_values(&["all"]).inc();
            let shared = self.cache.purge_all().await;
            return text(
                StatusCode::OK,
                format!("purged everything{}\n", told(shared)),
            );
        }
        if !tags.is_empty() {
            metrics::CACHE_PURGES.with_label_values(&["tag"]).inc();
            let shared = self.cache.purge_tags(&tags).await;
            return text(
                StatusCode::OK,
                format!("purged tags {}{}\n", tags.join(" "), told(shared)),
            );
        }
        if let Some((_, u)) = params.iter().find(|(k, _)| k == "url") {
            let (path, query) = match u.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (u.as_str(), None),
            };
            let Some(rule) = self.cache.config.routes.iter().find(|r| r.matches(path)) else {
                return text(StatusCode::NOT_FOUND, "no cache route matches that url\n");
            };
            let Some(key) = cache_key(path, query, rule) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "that url names a key parameter twice: it is never cached\n",
                );
            };
            metrics::CACHE_PURGES.with_label_values(&["key"]).inc();
            let shared = self.cache.purge_key(&key).await;
            return text(StatusCode::OK, format!("purged {key}{}\n", told(shared)));
        }
        text(
            StatusCode::BAD_REQUEST,
            "say what to purge: ?tag=…, ?url=… or ?all=true\n",
        )
    }
}

/// What a purge's answer says about the other edges (nothing when not sharing).
fn told(c: Confirmation) -> &'static str {
    match c {
        Confirmation::Applied => "; every other live edge has applied it",
        Confirmation::TimedOut => {
            "; not every other edge applied it within invalidation.confirm_timeout"
        }
        Confirmation::Unconnected => "; Redis is unreachable: the other edges will be told later",
        Confirmation::Off => "",
    }
}

fn wants_keepalive(req: &pingora_http::RequestHeader) -> bool {
    crate::headers::keeps_alive(
        req.version == http::Version::HTTP_10,
        req.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (method, path) = {
            let req = session.req_header();
            (req.method.clone(), req.uri.path().to_owned())
        };
        // Pingora's HTTP app turns keep-alive on for every request after parsing it, so an
        // HTTP/1.0 probe or a `Connection: close` would wait on an open connection for a
        // close that never comes. Honour what the client asked for.
        if !wants_keepalive(session.req_header()) {
            session.set_keepalive(None);
        }
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                self.refresh_gauges();
                PrometheusHttpApp.response(session).await
            }
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET, "/backends") => json(self.backends_json()),
            (Method::POST, "/purge") => self.purge(session).await,
            (_, "/metrics" | "/healthz" | "/backends" | "/purge") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}
