//! A backend that hangs, with real processes: two `reviews api` processes behind an edge
//! built from deploy/edge.example.toml, steady uncached GETs plus reads of cached pages, and
//! one API process stopped (SIGSTOP) for 10 s. No GET may fail: a try at the frozen process
//! is abandoned after `upstream.timeouts.per_try` and retried on the other, the frozen one
//! holds no more than `upstream.max_in_flight` requests, and passive health takes it out. Cached pages must keep answering `hit` without waiting for the
//! frozen backend at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use parking_lot::Mutex;

use crate::helpers::{api, read, wait_ok};

/// One request's outcome: when it was sent (since the start), status, cache status, time.
#[derive(Debug, Clone)]
struct Outcome {
    at: Duration,
    status: Option<u16>,
    cache: String,
    took: Duration,
}

type Log = Arc<Mutex<Vec<Outcome>>>;

/// Sends GETs at `rate` per second until `until`, `path(i)` for the i-th, logging each.
fn drive(
    client: reqwest::Client,
    base: String,
    rate: u64,
    until: Instant,
    start: Instant,
    path: impl Fn(u64) -> String + Send + 'static,
    log: Log,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut i = 0;
        let mut sent = Vec::new();
        while Instant::now() < until {
            tick.tick().await;
            let (client, url, log) = (client.clone(), format!("{base}{}", path(i)), log.clone());
            i += 1;
            sent.push(tokio::spawn(async move {
                let at = start.elapsed();
                let t = Instant::now();
                let r = client.get(url).send().await;
                let (status, cache) = match &r {
                    Ok(r) => (
                        Some(r.status().as_u16()),
                        r.headers()
                            .get("x-cache-status")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned(),
                    ),
                    Err(_) => (None, String::new()),
                };
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
                log.lock().push(Outcome {
                    at,
                    status,
                    cache,
                    took: t.elapsed(),
                });
            }));
        }
        for s in sent {
            let _ = s.await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_fails_no_get_and_cached_pages_stay_hits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reviews.db");
    let (frozen, a) = api(&db, &dir.path().join("a.log"));
    let (_other, b) = api(&db, &dir.path().join("b.log"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for addr in [a, b] {
        wait_ok(
            &client,
            &format!("http://{addr}/readyz"),
            Duration::from_secs(60),
        )
        .await;
    }

    let text = read("deploy/edge.example.toml");
    let mut c = reviews_proxy::EdgeConfig::from_toml_unvalidated(&text).unwrap();
    c.upstream.servers = vec![
        reviews_proxy::Upstream::new(a),
        reviews_proxy::Upstream::new(b),
    ];
    c.listen.address = "127.0.0.1:0".parse().unwrap();
    c.admin.address = "127.0.0.1:0".parse().unwrap();
    c.work_stealing = true;
    // Few slots per backend, so the frozen one fills its slots and the others are sent to
    // the live one (or queued) instead of piling up behind it.
    c.upstream.max_in_flight = 8;
    c.max_connections = 1024;
    c.nofile = 0;
    let edge = tokio::task::spawn_blocking(move || reviews_proxy::start(c))
        .await
        .unwrap()
        .expect("the edge starts");
    let base = format!("http://{}", edge.listen);

    // Cached pages, warmed before the freeze.
    for id in 1..=20 {
        let r = client
            .get(format!("{base}/reviews/meta?product_id={id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let start = Instant::now();
    let until = start + Duration::from_secs(15);
    let (misses, hits): (Log, Log) = Default::default();
    let uncached = drive(
        client.clone(),
        base.clone(),
        200,
        until,
        start,
        // A new product each time: every request is a miss that goes upstream.
        |i| format!("/reviews?product_id={}", 1_000 + i),
        misses.clone(),
    );
    let cached = drive(
        client.clone(),
        base.clone(),
        50,
        until,
        start,
        |i| format!("/reviews/meta?product_id={}", 1 + i % 20),
        hits.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = frozen.pid();
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen_at = start.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    kill(pid, Signal::SIGCONT).unwrap();
    let thawed_at = start.elapsed();
    uncached.await.unwrap();
    cached.await.unwrap();

    let misses = misses.lock().clone();
    let hits = hits.lock().clone();
    let failed: Vec<&Outcome> = misses.iter().filter(|o| o.status != Some(200)).collect();
    let during = |o: &&Outcome| o.at >= frozen_at && o.at < thawed_at;
    let slowest_miss = misses.iter().map(|o| o.took).max().unwrap();
    eprintln!(
        "{} uncached GETs ({} during the freeze), slowest {slowest_miss:?}; {} cached reads",
        misses.len(),
        misses.iter().filter(during).count(),
        hits.len()
    );
    assert!(
        misses.len() > 2000,
        "the load ran: {} requests",
        misses.len()
    );
    assert!(
        failed.is_empty(),
        "{} GETs failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    let not_hits: Vec<&Outcome> = hits
        .iter()
        .filter(|o| o.status != Some(200) || o.cache != "hit")
        .collect();
    assert!(
        not_hits.is_empty(),
        "cached pages answered otherwise: {not_hits:?}"
    );
    // A hit that waited for the frozen backend would take at least the 1 s per-try timeout;
    // hits take about a millisecond. Half a second apart from both is not a timing race.
    let slowest_hit = hits.iter().filter(during).map(|o| o.took).max().unwrap();
    eprintln!("slowest hit during the freeze: {slowest_hit:?}");
    assert!(
        slowest_hit < Duration::from_millis(500),
        "a cached page waited for the frozen backend: {slowest_hit:?}"
    );

    // The frozen backend's timeouts were counted by passive health.
    let metrics = client
        .get(format!("http://{}/metrics", edge.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let timeouts = metrics
        .lines()
        .find(|l| {
            l.starts_with("edge_upstream_errors_total")
                && l.contains(&a.to_string())
                && l.contains("kind=\"timeout\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        timeouts >= 1.0,
        "timeouts at the frozen backend are counted"
    );
    tokio::task::spawn_blocking(move || drop(edge))
        .await
        .unwrap();
}
