//! The open model keeps its schedule: the right number of requests, spread at the right pace,
//! whatever the server does; and when it cannot (too many in flight) it says so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use reviews_loadtest::execute;
use reviews_loadtest::plan::Load;
use reviews_loadtest::schedule::Schedule;

use crate::helpers::{plan, serve};

#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Instant>>>);

fn counting_app(arrivals: Arrivals) -> Router {
    Router::new()
        .route(
            "/ok",
            get(|State(a): State<Arrivals>| async move {
                a.0.lock().unwrap().push(Instant::now());
                "ok"
            }),
        )
        .with_state(arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_sends_rate_times_duration_at_a_steady_pace() {
    let arrivals = Arrivals::default();
    let url = serve(counting_app(arrivals.clone())).await;
    let report = execute(&plan(&url, "GET /ok", 300.0, 2000)).await.unwrap();

    let s = &report.summary;
    assert_eq!((s.scheduled, s.sent, s.ok, s.failed), (600, 600, 600, 0));
    assert_eq!(s.throughput, "600/600");
    let times = arrivals.0.lock().unwrap().clone();
    assert_eq!(times.len(), 600);
    // 600 requests at 300/s: the first and last are 599/300 s apart.
    let span = (*times.last().unwrap() - times[0]).as_secs_f64();
    assert!((1.9..2.3).contains(&span), "arrivals spread over {span}s");
    // Each half of the run got its half of the requests, within a few percent.
    let middle = times[0] + Duration::from_secs(1);
    let first_half = times.iter().filter(|t| **t < middle).count();
    assert!(
        (270..=330).contains(&first_half),
        "{first_half} in the first second"
    );
    assert!(
        (270.0..=330.0).contains(&s.achieved_rps),
        "{}",
        s.achieved_rps
    );
    assert_eq!(s.target_rps, Some(300.0));
    let per_second: Vec<u64> = report.timeline.iter().map(|t| t.scheduled).collect();
    assert_eq!(per_second, [300, 300]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_ramp_and_hold() {
    let arrivals = Arrivals::default();
    let url = serve(counting_app(arrivals.clone())).await;
    let mut p = plan(&url, "GET /ok", 1.0, 1);
    p.load = Load::Open("0..200:1s,100:1s".parse::<Schedule>().unwrap());
    let report = execute(&p).await.unwrap();
    assert_eq!(report.summary.scheduled, 200);
    assert_eq!(arrivals.0.lock().unwrap().len(), 200);
    // The ramp's first second carries its mean rate, 100; the ramp is slower at its start.
    let per_second: Vec<u64> = report.timeline.iter().map(|t| t.scheduled).collect();
    assert_eq!(per_second, [100, 100]);
    assert_eq!(report.plan.stages.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_inflight_are_counted_as_dropped() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "late"
        }),
    );
    let url = serve(app).await;
    let mut p = plan(&url, "GET /slow", 200.0, 500);
    p.max_inflight = 20;
    let report = execute(&p).await.unwrap();
    let s = &report.summary;
    assert_eq!(s.scheduled, 100);
    assert_eq!(
        s.sent, 20,
        "only max_inflight requests fit in the 600 ms stall"
    );
    assert_eq!(report.errors.dropped, 80);
    assert_eq!(s.ok, 20);
    assert!((s.error_rate - 0.8).abs() < 1e-9);
    assert_eq!(report.tester.peak_inflight, 20);
    assert_eq!(report.timeline[0].dropped, 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_model_keeps_its_connections_busy() {
    let arrivals = Arrivals::default();
    let url = serve(counting_app(arrivals.clone())).await;
    let mut p = plan(&url, "GET /ok", 1.0, 1);
    p.load = Load::Closed {
        connections: 3,
        duration: Duration::from_millis(500),
    };
    let report = execute(&p).await.unwrap();
    let s = &report.summary;
    assert!(s.scheduled > 20, "only {} requests", s.scheduled);
    assert_eq!(s.ok, s.scheduled);
    assert_eq!(s.target_rps, None);
    assert_eq!(report.plan.mode, "closed");
    assert!(
        s.connections_opened <= 3,
        "{} connections",
        s.connections_opened
    );
    assert_eq!(arrivals.0.lock().unwrap().len() as u64, s.scheduled);
}
