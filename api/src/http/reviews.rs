//! The contract's routes: list, meta, create, helpful, report.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};

use super::params::Params;
use super::views::{MetaView, ReviewList};
use super::{ApiError, AppState, Caching, json_response, read_json, write_response};
use crate::domain::date::now_ms;
use crate::domain::{FieldError, NewReview, ProductId};
use crate::store::ListQuery;

/// `GET /reviews`
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = Params::from_query(query.as_deref())
        .list_query(false)
        .map_err(ApiError::Invalid)?;
    list_page(&state, &q, Caching::Public).await
}

pub(super) async fn list_page(
    state: &AppState,
    q: &ListQuery,
    caching: Caching,
) -> Result<Response, ApiError> {
    let reviews = state.store.list_reviews(q).await?;
    let body = ReviewList::new(q, &reviews).to_json();
    Ok(json_response(state, q.product_id, body, caching))
}

/// `GET /reviews/meta`
pub async fn meta(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let product = Params::from_query(query.as_deref()).product_id(false, &mut errors);
    let product = product.ok_or(ApiError::Invalid(errors))?;
    meta_of(&state, product, Caching::Public).await
}

pub(super) async fn meta_of(
    state: &AppState,
    product: ProductId,
    caching: Caching,
) -> Result<Response, ApiError> {
    let meta = state.store.product_meta(product).await?;
    let view = MetaView {
        product_id: product.get(),
        meta: &meta,
    };
    Ok(json_response(state, product, view.to_json(), caching))
}

/// `POST /reviews` (and the legacy `POST /addreview`): 201 `Created`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let json = read_json(&headers, body).await?;
    let review = NewReview::try_from(&json).map_err(ApiError::Invalid)?;
    let id = state.store.add_review(&review, now_ms()).await?;
    tracing::debug!(
        review_id = id,
        product_id = review.product_id.get(),
        "review added"
    );
    Ok(write_response(
        StatusCode::CREATED,
        review.product_id,
        "Created",
    ))
}

/// `PUT /reviews/{review_id}/helpful`: 204.
pub async fn helpful(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    mark_helpful(&state, review_id_path(id)?).await
}

/// `PUT /reviews/{review_id}/report`: 204.
pub async fn report(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    mark_reported(&state, review_id_path(id)?).await
}

/// The path's review id. A segment that does not even decode (`%FF`) is refused like any other
/// bad id, as a 422 problem naming `review_id` rather than axum's plain-text 400.
fn review_id_path(id: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let invalid = |m| ApiError::field("review_id", m);
    let Path(id) = id.map_err(|_| invalid(crate::domain::POSITIVE_INTEGER))?;
    crate::domain::positive_id_text(&id).map_err(invalid)
}

pub(super) fn review_id_json(v: &serde_json::Value) -> Result<i64, ApiError> {
    let field = v.get("review_id").unwrap_or(&serde_json::Value::Null);
    crate::domain::positive_id_json(field)
        .map_err(|m| ApiError::Invalid(vec![FieldError::new("review_id", m)]))
}

pub(super) async fn mark_helpful(state: &AppState, id: i64) -> Result<Response, ApiError> {
    match state.store.mark_helpful(id).await? {
        Some(product) => Ok(write_response(StatusCode::NO_CONTENT, product, "")),
        None => Err(ApiError::NotFound(format!("review {id} not found"))),
    }
}

pub(super) async fn mark_reported(state: &AppState, id: i64) -> Result<Response, ApiError> {
    match state.store.report(id).await? {
        Some(product) => Ok(write_response(StatusCode::NO_CONTENT, product, "")),
        None => Err(ApiError::NotFound(format!("review {id} not found"))),
    }
}
