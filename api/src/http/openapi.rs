//! `GET /openapi.json`: the contract as an OpenAPI 3.1 document. It is written by hand from
//! the contract (the contract's exact types — counts as strings, `value` as a 16-decimal
//! string — are clearer stated than derived), and a test validates real responses of every
//! route against it, so it cannot drift from what the server does.

use axum::response::IntoResponse;
use http::header;

pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
