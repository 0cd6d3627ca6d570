//! Writes purge the edges even when they do not pass through one (`[invalidation]`): after
//! a successful write, the `Surrogate-Key` tags of its response go to the shared purge
//! stream, as an edge would publish them, and the answer waits (at most
//! `invalidation.confirm_timeout`, never while Redis is away) until every live edge has
//! applied them: a client reading after its write sees it through any edge. An edge that
//! also saw the write purges twice, harmlessly.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use reviews_shared::invalidation::{Invalidation, Publisher};

pub async fn publish(State(publisher): State<Publisher>, req: Request, next: Next) -> Response {
    let write = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let res = next.run(req).await;
    if write && res.status().is_success() {
        let tags: Vec<String> = res
            .headers()
            .get_all("surrogate-key")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(str::split_ascii_whitespace)
            .map(String::from)
            .collect();
        if !tags.is_empty() {
            publisher.publish_confirmed(Invalidation::Tags(tags)).await;
        }
    }
    res
}
