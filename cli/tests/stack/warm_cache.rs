//! The cache survives a reload and a restart, with real processes: an API process, an edge
//! process, 1,000 warmed pages. `reviews proxy --reload` under steady load fails no request
//! and the new edge answers at least 99% of the pages from its cache; purges made while the
//! two edges overlap are honoured by the new one. SIGTERM and a fresh start with
//! `cache.snapshot_path` bring the pages back the same way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use crate::helpers::{PidGuard, Stack, reload_command, wait_until};

const PAGES: u64 = 1000;

/// How many of the pages are answered from the cache.
async fn hits(s: &Stack) -> u64 {
    let mut hits = 0;
    for id in 1..=PAGES {
        if s.get(id).await == "hit" {
            hits += 1;
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_cache_and_the_purges_made_during_it() {
    let s = Stack::start().await;
    let mut old = s.edge("edge-old.log");
    s.ready().await;
    for _ in 0..2 {
        hits(&s).await;
    }
    assert!(hits(&s).await >= PAGES * 99 / 100, "the cache is warm");

    // Steady load throughout, on every page but 7 and 8 (those prove the purges).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (client, listen) = (s.client.clone(), s.listen);
        tokio::spawn(async move {
            let mut id = 10;
            while !stop.load(Ordering::Relaxed) {
                id = 10 + (id + 37) % (PAGES - 10);
                let url = format!("http://{listen}/reviews/meta?product_id={id}");
                match client.get(url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let reload = {
        let (config, log) = (s.config(), s.path("edge-new.log"));
        tokio::task::spawn_blocking(move || reload_command(&config, &log).status().unwrap())
    };
    // The old edge has written its cache for the new one: page 7's entry is in that file.
    // A purge now must still reach the new edge.
    let handover = Path::new(&format!("{}.cache", s.path("upgrade.sock").display())).to_owned();
    wait_until("the handover snapshot", Duration::from_secs(30), || {
        handover.exists()
    });
    s.purge_tag("product-7").await;
    let status = reload.await.unwrap();
    assert!(status.success(), "reviews proxy --reload failed: {status}");
    let new_pid = s.pid_in_file();
    let _new = PidGuard(new_pid);
    assert_ne!(new_pid, old.0.id());
    // Both edges serve until the old one has drained: a purge now lands on either.
    s.purge_tag("product-8").await;
    let exited = tokio::task::spawn_blocking(move || old.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "the old edge exited with {exited}");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the reload ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );

    assert_ne!(
        s.get(7).await,
        "hit",
        "a purge made during the handover is honoured"
    );
    assert_ne!(
        s.get(8).await,
        "hit",
        "a purge made while both edges served is honoured"
    );
    let hits = hits(&s).await;
    assert!(
        hits >= PAGES * 99 / 100,
        "{hits} of {PAGES} pages were hits after the reload"
    );
    // The new edge removes them once it sees the old one gone (it polls every 100 ms).
    wait_until(
        "the new edge to remove the handover files",
        Duration::from_secs(10),
        || !handover.exists(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_snapshot_written_at_sigterm() {
    let s = Stack::start().await;
    let mut first = s.edge("edge-first.log");
    s.ready().await;
    for _ in 0..2 {
        hits(&s).await;
    }
    s.purge_tag("product-5").await;
    kill(first.pid(), Signal::SIGTERM).unwrap();
    let exited = tokio::task::spawn_blocking(move || first.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "the edge exited with {exited}");
    assert!(
        s.path("cache.snapshot").exists(),
        "the snapshot was written"
    );

    let _second = s.edge("edge-second.log");
    s.ready().await;
    assert_ne!(s.get(5).await, "hit", "a purged page does not come back");
    let hits = hits(&s).await;
    assert!(
        hits >= PAGES * 99 / 100,
        "{hits} of {PAGES} pages were hits after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_ignored_and_the_edge_starts_cold() {
    let s = Stack::start().await;
    std::fs::write(
        s.path("cache.snapshot"),
        b"RVWSNAP1 but then nothing sensible",
    )
    .unwrap();
    let _edge = s.edge("edge.log");
    s.ready().await;
    assert_eq!(s.get(1).await, "miss");
    let log = std::fs::read_to_string(s.path("edge.err")).unwrap();
    assert!(
        log.contains("ignoring the cache snapshot"),
        "the edge says why it starts cold:\n{log}"
    );
}
