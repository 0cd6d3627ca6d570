//! `reviews up` as a new user runs it: from an empty directory to a served request, then
//! Ctrl-C (SIGINT) stops everything it started.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use crate::helpers::{Proc, free_addrs, wait_until};

/// A base port whose neighbours `up` derives (base + i for the APIs, + 100 + i for their
/// metrics) are free now.
fn api_base() -> u16 {
    for _ in 0..200 {
        let [a] = free_addrs::<1>();
        let base = a.port();
        if base > 60000 {
            continue;
        }
        let free = [base, base + 1, base + 100, base + 101]
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range for the API processes");
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// `THP_enabled` from a process's status: `None` on kernels that do not report it.
fn thp_enabled(pid: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

/// `up` and the edge and API processes it started all run with transparent huge pages off (a
/// cold edge's first second otherwise faults in 2 MiB pages on its workers; see
/// `reviews_proxy::small_pages`).
fn every_process_runs_on_small_pages(up: i32) {
    if std::env::var_os(reviews_proxy::allocator::HUGE_PAGES_ENV).is_some() {
        eprintln!("huge pages not checked: the test's environment sets MIMALLOC_ALLOW_THP");
        return;
    }
    if thp_enabled(up).is_none() {
        eprintln!("huge pages not checked: this kernel's /proc/<pid>/status has no THP_enabled");
        return;
    }
    // Children are listed under the thread that started them, which may be any of up's.
    let mut pids = vec![up];
    for task in std::fs::read_dir(format!("/proc/{up}/task")).unwrap() {
        let children = std::fs::read_to_string(task.unwrap().path().join("children"));
        pids.extend(
            children
                .unwrap_or_default()
                .split_whitespace()
                .map(|p| p.parse::<i32>().unwrap()),
        );
    }
    assert_eq!(pids.len(), 4, "up, the edge and two APIs: {pids:?}");
    for pid in pids {
        assert_eq!(thp_enabled(pid), Some(false), "process {pid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_from_an_empty_directory_and_ctrl_c_stops_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let [front, admin] = free_addrs::<2>();
    let base = api_base();
    let db = dir.path().join("data/reviews.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_reviews"))
        .args(["up", "--apis", "2", "--demo-products", "300", "--db"])
        .arg(&db)
        .args(["--port", &front.port().to_string()])
        .args(["--admin-port", &admin.port().to_string()])
        .args(["--api-port", &base.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.err")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let up = Proc(child);

    // The banner is printed once every process answers its readiness probe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.contains("Reviews stack is up") => break,
            Ok(line) => seen.push(line),
            Err(e) => panic!(
                "no banner from `reviews up` ({e}); stdout: {seen:?}; stderr: {}",
                std::fs::read_to_string(dir.path().join("up.err")).unwrap_or_default()
            ),
        }
    }

    let client = reqwest::Client::new();
    let url = format!("http://{front}/reviews/meta?product_id=7");
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        statuses.push(r.headers()["x-cache-status"].to_str().unwrap().to_owned());
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["product_id"], "7");
    }
    assert_eq!(statuses, ["miss", "hit"]);

    let apis = [base, base + 1].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    assert!(apis.iter().all(|a| listening(*a)));
    every_process_runs_on_small_pages(up.pid().as_raw());

    kill(up.pid(), Signal::SIGINT).unwrap();
    let mut up = up;
    let mut status = None;
    wait_until(
        "`reviews up` to exit after Ctrl-C",
        Duration::from_secs(60),
        || {
            status = up.0.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.unwrap().success(), "exit status {status:?}");
    // Nothing it started outlives it.
    for addr in [front, admin, apis[0], apis[1]] {
        wait_until(
            &format!("{addr} to be closed"),
            Duration::from_secs(30),
            || !listening(addr),
        );
    }
}
