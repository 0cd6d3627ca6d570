//! The edge view: a stand-in edge serves Prometheus text whose counters move as it answers,
//! and the report shows what moved during the run, not the totals since the edge started.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use reviews_loadtest::edge_metrics::{
    BACKEND_LABEL, CACHE_REQUESTS, CACHE_STATUS_LABEL, COALESCED, UPSTREAM_REQUESTS,
};
use reviews_loadtest::execute;
use serde::Deserialize;

use crate::helpers::{plan, serve};

/// Counters of the stand-in edge, starting from non-zero values as a running edge's would.
#[derive(Debug)]
pub struct Counters {
    hit: u64,
    miss: u64,
    stale: u64,
    coalesced: u64,
    backend_a: u64,
    backend_b: u64,
}

#[derive(Deserialize)]
struct ById {
    product_id: u64,
}

/// An edge where odd ids hit, every 10th id is served stale (and coalesced), and the other
/// even ids miss: to backend a when divisible by 4, else to backend b.
pub fn fake_edge() -> Router {
    let counters = Arc::new(Mutex::new(Counters {
        hit: 1000,
        miss: 500,
        stale: 7,
        coalesced: 3,
        backend_a: 250,
        backend_b: 250,
    }));
    Router::new()
        .route(
            "/reviews",
            get(
                |State(c): State<Arc<Mutex<Counters>>>, Query(q): Query<ById>| async move {
                    let mut c = c.lock().unwrap();
                    let id = q.product_id;
                    if id % 2 == 1 {
                        c.hit += 1;
                    } else if id % 10 == 0 {
                        c.stale += 1;
                        c.coalesced += 1;
                    } else {
                        c.miss += 1;
                        if id % 4 == 0 {
                            c.backend_a += 1;
                        } else {
                            c.backend_b += 1;
                        }
                    }
                    "[]"
                },
            ),
        )
        .route(
            "/metrics",
            get(|State(c): State<Arc<Mutex<Counters>>>| async move {
                let c = c.lock().unwrap();
                format!(
                    "# HELP {CACHE_REQUESTS} Requests by cache status.\n\
                     # TYPE {CACHE_REQUESTS} counter\n\
                     {CACHE_REQUESTS}{{{CACHE_STATUS_LABEL}=\"hit\"}} {}\n\
                     {CACHE_REQUESTS}{{{CACHE_STATUS_LABEL}=\"miss\"}} {}\n\
                     {CACHE_REQUESTS}{{{CACHE_STATUS_LABEL}=\"stale\"}} {}\n\
                     {COALESCED} {}\n\
                     {UPSTREAM_REQUESTS}{{{BACKEND_LABEL}=\"a\"}} {}\n\
                     {UPSTREAM_REQUESTS}{{{BACKEND_LABEL}=\"b\"}} {}\n\
                     edge_request_duration_seconds_bucket{{le=\"0.005\"}} 12\n",
                    c.hit, c.miss, c.stale, c.coalesced, c.backend_a, c.backend_b
                )
            }),
        )
        .with_state(counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_what_the_edge_cache_did_during_the_run() {
    let url = serve(fake_edge()).await;
    let mut p = plan(&url, "GET /reviews?product_id={id}", 200.0, 500);
    p.ids = "seq:1..100".parse().unwrap();
    p.edge_metrics = Some(format!("{url}/metrics"));
    let report = execute(&p).await.unwrap();
    assert_eq!(report.summary.ok, 100);

    let edge = report.edge.expect("an edge section");
    assert_eq!(edge.error, None);
    assert_eq!(edge.cache["hit"], 50);
    assert_eq!(edge.cache["miss"], 40);
    assert_eq!(edge.stale, 10);
    assert_eq!(edge.cache["expired"], 0);
    // Fresh hits over every cache outcome: stale answers are not counted as hits.
    assert!((edge.hit_ratio.unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(edge.coalesced, Some(10));
    let split: Vec<(&str, u64)> = edge
        .backends
        .iter()
        .map(|b| (b.backend.as_str(), b.requests))
        .collect();
    assert_eq!(split, [("a", 20), ("b", 20)]);
    assert!((edge.backends[0].share - 0.5).abs() < 1e-9);
    assert!(edge.missing.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_edge_fails_the_run_before_it_starts() {
    let url = serve(fake_edge()).await;
    let mut p = plan(&url, "GET /reviews?product_id={id}", 10.0, 100);
    p.edge_metrics = Some(crate::helpers::closed_port_url() + "/metrics");
    let err = execute(&p).await.unwrap_err();
    assert!(format!("{err:#}").contains("edge metrics"), "{err:#}");
}
