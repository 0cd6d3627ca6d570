//! The HTTP face of the API: routes of the contract (and the legacy aliases), their
//! parameters, bodies, caching headers and errors.

mod error;
mod json;
mod json_out;
mod legacy;
mod openapi;
mod params;
mod purges;
mod reviews;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, put};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

pub use error::ApiError;

use crate::domain::ProductId;
use crate::metrics::Metrics;
use crate::store::ReviewStore;

/// Largest request body accepted (the contract's 413 limit).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler needs, passed explicitly.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ReviewStore>,
    pub metrics: Arc<Metrics>,
    /// `Cache-Control` value of cacheable GETs, built once from the configured max-age.
    pub cache_control: HeaderValue,
    /// Publishes the tags of successful writes to the edges (`[invalidation]`).
    pub publisher: Option<reviews_shared::invalidation::Publisher>,
}

impl AppState {
    pub fn new(store: Arc<dyn ReviewStore>, metrics: Arc<Metrics>, max_age_secs: u64) -> Self {
        let cache_control = HeaderValue::from_str(&format!("public, max-age={max_age_secs}"))
            .unwrap_or(HeaderValue::from_static("no-store"));
        AppState {
            store,
            metrics,
            cache_control,
            publisher: None,
        }
    }

    pub fn with_publisher(mut self, p: reviews_shared::invalidation::Publisher) -> Self {
        self.publisher = Some(p);
        self
    }
}

/// The public router. Metrics live on a separate listener (see `crate::server`).
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new()
        .route("/reviews", get(reviews::list).post(reviews::create))
        .route("/reviews/meta", get(reviews::meta))
        .route("/reviews/{review_id}/helpful", put(reviews::helpful))
        .route("/reviews/{review_id}/report", put(reviews::report))
        .route("/dbreviews", get(legacy::list))
        .route("/dbmeta", get(legacy::meta))
        .route("/addreview", axum::routing::post(reviews::create))
        .route("/addHelp", put(legacy::helpful))
        .route("/reportreview", put(legacy::report))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    if let Some(p) = state.publisher.clone() {
        routes = routes.layer(axum::middleware::from_fn_with_state(p, purges::publish));
    }
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &http::Request<_>| {
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_else(|| "unmatched".to_owned());
                    tracing::debug_span!("request", method = %req.method(), route)
                },
            ),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Liveness: the process answers. Never touches the database, so a database outage does not
/// get healthy processes restarted.
async fn health() -> &'static str {
    "ok"
}

/// Readiness: the database answered a round trip within the pool's acquire timeout.
async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, ApiError> {
    state.store.ping().await?;
    Ok("ready")
}

/// How a GET response may be cached.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// `Cache-Control: public, max-age=…` from config.
    Public,
    /// The id came from a GET body, which caches do not key on.
    NoStore,
}

fn surrogate_key(product: ProductId) -> HeaderValue {
    HeaderValue::from_str(&format!("product-{}", product.get()))
        .unwrap_or(HeaderValue::from_static("product"))
}

/// A JSON GET body with the caching headers the edge relies on.
fn json_response(
    state: &AppState,
    product: ProductId,
    body: Vec<u8>,
    caching: Caching,
) -> axum::response::Response {
    let mut res = axum::response::Response::new(axum::body::Body::from(body));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        match caching {
            Caching::Public => state.cache_control.clone(),
            Caching::NoStore => HeaderValue::from_static("no-store"),
        },
    );
    h.insert("surrogate-key", surrogate_key(product));
    res
}

/// A successful write: the product it changed is named so the edge can purge its pages.
fn write_response(
    status: StatusCode,
    product: ProductId,
    body: &'static str,
) -> axum::response::Response {
    let mut res = axum::response::Response::new(axum::body::Body::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    if !body.is_empty() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("surrogate-key", surrogate_key(product));
    res
}

/// Reads a JSON request body: 415 unless it is declared JSON, 413 past 64 KiB, 422 naming
/// `json` when it does not parse or the field holding a repeated key (see [`json`]).
async fn read_json(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<serde_json::Value, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_body(body).await?;
    json::parse(&bytes).map_err(|e| ApiError::Invalid(vec![e]))
}

/// The whole body: 413 past 64 KiB; 400 when it cannot be read (a broken chunked encoding, a
/// connection closed mid-body), which is the client's fault but names no field.
async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge
            } else {
                tracing::debug!(error = %e, "unreadable request body");
                ApiError::BadRequest("the request body could not be read".into())
            }
        })
}
