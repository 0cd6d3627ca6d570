//! What the server receives: ids in the pattern's order for a seed, POST bodies that the API
//! contract accepts, the endpoint mix in its weights, and the base URL's path and headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use reviews_loadtest::client::Header;
use reviews_loadtest::execute;
use reviews_loadtest::target::{Mix, Targets};
use serde::Deserialize;

use crate::helpers::{plan, serve};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

#[derive(Deserialize)]
struct ById {
    product_id: u64,
}

/// The contract's POST /reviews rules, checked as the API would.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReview {
    product_id: u64,
    rating: u8,
    summary: String,
    body: String,
    recommend: bool,
    name: String,
    email: String,
    photos: Vec<String>,
    characteristics: BTreeMap<String, u8>,
}

fn app(seen: Seen) -> Router {
    Router::new()
        .route(
            "/api/reviews",
            get(
                |State(s): State<Seen>, Query(q): Query<ById>, headers: HeaderMap| async move {
                    let tag = headers
                        .get("x-run")
                        .map_or("", |v| v.to_str().unwrap())
                        .to_string();
                    s.0.lock()
                        .unwrap()
                        .push(format!("list {} {tag}", q.product_id));
                    "[]"
                },
            )
            .post(
                |State(s): State<Seen>, Json(r): Json<NewReview>| async move {
                    let valid = r.product_id >= 1
                        && (1..=5).contains(&r.rating)
                        && r.summary.chars().count() <= 60
                        && (50..=1000).contains(&r.body.chars().count())
                        && (1..=60).contains(&r.name.chars().count())
                        && r.email.len() <= 60
                        && r.email.contains('@')
                        && r.photos.is_empty()
                        && r.characteristics.is_empty();
                    let _ = r.recommend;
                    s.0.lock().unwrap().push(format!("post {}", r.product_id));
                    if valid {
                        StatusCode::CREATED
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                },
            ),
        )
        .route(
            "/api/reviews/meta",
            get(|State(s): State<Seen>, Query(q): Query<ById>| async move {
                s.0.lock().unwrap().push(format!("meta {}", q.product_id));
                "{}"
            }),
        )
        .with_state(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_ids_arrive_in_order_and_wrap() {
    let seen = Seen::default();
    let url = serve(app(seen.clone())).await;
    let mut p = plan(
        &format!("{url}/api"),
        "GET /reviews?product_id={id}",
        50.0,
        300,
    );
    p.ids = "seq:5..9".parse().unwrap();
    p.headers = vec!["X-Run: seq".parse::<Header>().unwrap()];
    let report = execute(&p).await.unwrap();
    assert_eq!(report.summary.ok, 15);
    let got = seen.0.lock().unwrap().clone();
    let expected: Vec<String> = [5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9]
        .iter()
        .map(|id| format!("list {id} seq"))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mix_sends_valid_reviews_in_its_weights_and_repeats_for_a_seed() {
    let run = |seed| async move {
        let seen = Seen::default();
        let url = serve(app(seen.clone())).await;
        let mut p = plan(&format!("{url}/api/"), "GET /", 300.0, 1000);
        let mix: Mix = "list=6,meta=3,post=1".parse().unwrap();
        p.targets = Targets::resolve(&mix, &[]).unwrap();
        p.ids = "uniform:1..1000011".parse().unwrap();
        p.seed = seed;
        let report = execute(&p).await.unwrap();
        let mut got = seen.0.lock().unwrap().clone();
        got.sort();
        (report, got)
    };
    let (report, first) = run(7).await;
    assert_eq!(report.summary.scheduled, 300);
    assert_eq!(report.summary.ok, 300, "errors: {:?}", report.errors);
    assert_eq!(
        report.status_codes["201"],
        report
            .endpoints
            .iter()
            .find(|e| e.name == "post")
            .unwrap()
            .requests
    );
    let count = |kind: &str| first.iter().filter(|s| s.starts_with(kind)).count();
    assert!(
        (150..=210).contains(&count("list ")),
        "list {}",
        count("list ")
    );
    assert!(
        (65..=115).contains(&count("meta ")),
        "meta {}",
        count("meta ")
    );
    assert!(
        (15..=50).contains(&count("post ")),
        "post {}",
        count("post ")
    );
    // The same seed sends the same requests; another seed does not.
    let (_, again) = run(7).await;
    assert_eq!(first, again);
    let (_, other) = run(8).await;
    assert_ne!(first, other);
}
