//! The legacy service's routes, kept so its clients work unchanged. Its GETs could carry the
//! product id in a JSON body; that is honoured only when the query has no id, and such a
//! response says `no-store`, since caches key on the URL and would serve one product's page
//! for another.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use http::HeaderMap;

use super::params::Params;
use super::reviews::{list_page, mark_helpful, mark_reported, meta_of, review_id_json};
use super::{ApiError, AppState, Caching, read_body, read_json};

/// The query, completed from a JSON body when the query has no id.
async fn params_of(query: Option<&str>, body: Body) -> Result<(Params, Caching), ApiError> {
    let mut params = Params::from_query(query);
    if params.has_product_id(true) {
        return Ok((params, Caching::Public));
    }
    let bytes = read_body(body).await?;
    match super::json::parse(&bytes) {
        Ok(json) => params.fill_from_json(&json),
        // The legacy clients sent all sorts of bodies with their GETs; one that is not JSON is
        // ignored as before. A JSON body naming a key twice is refused: which id it means
        // depends on who reads it.
        Err(e) if e.field == "json" => {}
        Err(e) => return Err(ApiError::Invalid(vec![e])),
    }
    Ok((params, Caching::NoStore))
}

/// `GET /dbreviews`: as `GET /reviews`, id from `product_id` or `id`.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let (params, caching) = params_of(query.as_deref(), body).await?;
    let q = params.list_query(true).map_err(ApiError::Invalid)?;
    list_page(&state, &q, caching).await
}

/// `GET /dbmeta`: as `GET /reviews/meta`.
pub async fn meta(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let (params, caching) = params_of(query.as_deref(), body).await?;
    let mut errors = Vec::new();
    let product = params
        .product_id(true, &mut errors)
        .ok_or(ApiError::Invalid(errors))?;
    meta_of(&state, product, caching).await
}

/// `PUT /addHelp` with `{"review_id": n}`.
pub async fn helpful(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let json = read_json(&headers, body).await?;
    mark_helpful(&state, review_id_json(&json)?).await
}

/// `PUT /reportreview` with `{"review_id": n}`.
pub async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let json = read_json(&headers, body).await?;
    mark_reported(&state, review_id_json(&json)?).await
}
