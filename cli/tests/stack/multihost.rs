//! The deployment of deploy/README.md as real hosts: `deploy/netns/hosts.sh` builds seven
//! network namespaces on a bridge (db, redis, api-1, api-2, edge-1, edge-2, client) and starts
//! PostgreSQL, Redis, two API processes per API box and two edges from the README's configs.
//! This test then talks to the edges from the `client` namespace, at the addresses an
//! operator would use, and takes a link, Redis and PostgreSQL away in turn. Needs root; skips
//! where namespaces cannot be made.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::helpers::repo_path;

const API_PORTS: [u16; 2] = [3001, 3002];

/// The hosts of one test; removed on drop, pass or fail.
struct Hosts {
    dir: tempfile::TempDir,
    id: String,
    net: String,
}

impl Hosts {
    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new(repo_path("deploy/netns/hosts.sh"))
            .args(args)
            .env("ID", &self.id)
            .env("NET", &self.net)
            .env("REVIEWS_BIN", env!("CARGO_BIN_EXE_reviews"))
            .output()
            .expect("run deploy/netns/hosts.sh")
    }

    fn run(&self, verb: &str) {
        let dir = self.dir.path().display().to_string();
        let out = self.script(&[verb, &dir]);
        assert!(
            out.status.success(),
            "hosts.sh {verb} failed: {}{}\n(logs in {dir})",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn addr(&self, octet: u8) -> String {
        format!("{}.{octet}", self.net)
    }

    fn edge(&self, i: usize) -> String {
        format!("http://{}:8080", self.addr(20 + i as u8))
    }

    fn edge_admin(&self, i: usize) -> String {
        format!("http://{}:9090", self.addr(20 + i as u8))
    }

    /// `ip link set eth0 up|down` on an API box: its cable pulled or plugged back.
    fn link(&self, api_box: usize, state: &str) {
        let ns = format!("{}-api-{api_box}", self.id);
        let ok = Command::new("ip")
            .args(["-n", &ns, "link", "set", "eth0", state])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip -n {ns} link set eth0 {state}");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        let _ = self.script(&["down", &dir]);
        if std::thread::panicking() {
            // Keep the logs of a failed run.
            let kept = self.dir.path().to_path_buf();
            eprintln!("logs kept in {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() != "0" {
        return Some("not root (network namespaces need it; CI runs as root)".into());
    }
    if !std::path::Path::new("/usr/lib/postgresql/15/bin/initdb").exists() {
        return Some("PostgreSQL 15 (/usr/lib/postgresql/15/bin/initdb) is not installed".into());
    }
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("redis-server is not installed".into());
    }
    let probe = format!("rvprobe{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).status();
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    match made {
        Ok(s) if s.success() => None,
        _ => Some("cannot create a network namespace here".into()),
    }
}

/// Runs `f` on a thread inside the `client` namespace, on a runtime of its own: every socket
/// it opens is the client host's.
fn as_client<F, Fut>(hosts: &Hosts, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let ns = format!("/run/netns/{}-client", hosts.id);
    let t = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f());
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The value of every `series{label="…"}` line whose name is `name`, keyed by the labels.
async fn series(client: &reqwest::Client, url: &str, name: &str) -> BTreeMap<String, f64> {
    let page = client.get(url).send().await.unwrap().text().await.unwrap();
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k[name.len()..].to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Requests every API process got through both edges, by backend address.
async fn upstream_counts(c: &reqwest::Client, admins: &[String]) -> BTreeMap<String, f64> {
    let mut total = BTreeMap::new();
    for a in admins {
        for (k, v) in series(c, &format!("{a}/metrics"), "edge_upstream_requests_total").await {
            *total.entry(k).or_insert(0.0) += v;
        }
    }
    total
}

/// Steady uncached GETs (a new product id each, so each goes to an API process) through both
/// edges in turn, every 20 ms, until stopped; counts answers that are not 200/503+Retry-After.
struct Steady {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Steady {
    fn start(
        client: reqwest::Client,
        edges: [String; 2],
        first_id: u64,
        allow_503: bool,
    ) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, f, n) = (stop.clone(), failed.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut id = first_id;
            while !s.load(Ordering::Relaxed) {
                let url = format!("{}/reviews/meta?product_id={id}", edges[(id % 2) as usize]);
                id += 1;
                n.fetch_add(1, Ordering::Relaxed);
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r)
                        if allow_503
                            && r.status() == 503
                            && r.headers().contains_key("retry-after") => {}
                    Ok(r) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{url}: {}", r.status()));
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{url}: {e}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        });
        Steady {
            stop,
            failed,
            sent,
            task,
        }
    }

    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.unwrap();
        let sent = self.sent.load(Ordering::Relaxed);
        assert!(sent > 20, "{what}: only {sent} requests sent");
        assert!(
            failures.is_empty(),
            "{what}: {} of {sent} requests failed: {failures:?}",
            self.failed.load(Ordering::Relaxed)
        );
        println!("{what}: {sent} requests, none failed");
    }
}

fn review(product: u64) -> serde_json::Value {
    serde_json::json!({
        "product_id": product, "rating": 4, "summary": "Across hosts",
        "body": "Posted through one edge on one host and read through the other one.",
        "recommend": true, "name": "lee", "email": "lee@example.com",
        "photos": [], "characteristics": {}
    })
}

async fn text(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

/// GETs `url` until the body differs from `old` (20 s at most); returns how many GETs it took.
async fn gets_until_changed(c: &reqwest::Client, url: &str, old: &str) -> u32 {
    for n in 1..=400 {
        if text(c, url).await != old {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} still serves the page from before the write");
}

async fn post(c: &reqwest::Client, edge: &str, product: u64) {
    let r = c
        .post(format!("{edge}/reviews"))
        .json(&review(product))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "POST through {edge}");
}

async fn wait_gauge(c: &reqwest::Client, admin: &str, name: &str, want: f64) {
    for _ in 0..600 {
        if series(c, &format!("{admin}/metrics"), name).await.get("") == Some(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{admin}: {name} never became {want}");
}

#[test]
fn two_edges_and_four_api_processes_on_separate_hosts() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL runs as its own user and must reach its data directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let hosts = Hosts {
        dir,
        id: format!("rv{:03x}", pid % 0xfff),
        net: format!("10.{}.{}", 100 + pid % 100, (pid / 100) % 250),
    };
    hosts.run("up");
    let hosts = Arc::new(hosts);
    let h = hosts.clone();
    as_client(&hosts, move || async move {
        let c = reqwest::Client::builder()
            // Longer than any bound the edge puts on a request (upstream.timeouts.total =
            // 15 s): a request hanging beyond the configured timeouts fails the test.
            .timeout(Duration::from_secs(16))
            .build()
            .unwrap();
        let edges = [h.edge(1), h.edge(2)];
        let admins = [h.edge_admin(1), h.edge_admin(2)];

        // The contract answers through either edge.
        for e in &edges {
            let list: serde_json::Value =
                serde_json::from_str(&text(&c, &format!("{e}/reviews?product_id=1")).await)
                    .unwrap();
            assert!(list["results"].is_array(), "{e}: {list}");
            let meta: serde_json::Value =
                serde_json::from_str(&text(&c, &format!("{e}/reviews/meta?product_id=1")).await)
                    .unwrap();
            assert_eq!(meta["product_id"], "1", "{e}: {meta}");
        }

        // Both edges balance over all four API processes.
        for id in 100..140u64 {
            for e in &edges {
                text(&c, &format!("{e}/reviews/meta?product_id={id}")).await;
            }
        }
        for admin in &admins {
            let by_backend = series(
                &c,
                &format!("{admin}/metrics"),
                "edge_upstream_requests_total",
            )
            .await;
            for b in [11u8, 12] {
                for p in API_PORTS {
                    let label = format!("{{backend=\"{}:{p}\"}}", h.addr(b));
                    assert!(
                        by_backend.get(&label).copied().unwrap_or(0.0) > 0.0,
                        "{admin} never used {label}: {by_backend:?}"
                    );
                }
            }
        }

        // A POST through edge-1 is visible through edge-2; so is a PUT helpful.
        let meta2 = format!("{}/reviews/meta?product_id=5", edges[1]);
        text(&c, &format!("{}/reviews/meta?product_id=5", edges[0])).await;
        let old = text(&c, &meta2).await;
        post(&c, &edges[0], 5).await;
        let n = gets_until_changed(&c, &meta2, &old).await;
        assert_eq!(
            n, 1,
            "edge-2 served the old page after the POST through edge-1 was answered"
        );
        let list: serde_json::Value =
            serde_json::from_str(&text(&c, &format!("{}/reviews?product_id=5", edges[0])).await)
                .unwrap();
        let review_id = list["results"][0]["review_id"]
            .as_u64()
            .expect("the posted review");
        let list2 = format!("{}/reviews?product_id=5", edges[1]);
        let old = text(&c, &list2).await;
        let r = c
            .put(format!("{}/reviews/{review_id}/helpful", edges[0]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let n = gets_until_changed(&c, &list2, &old).await;
        assert_eq!(
            n, 1,
            "edge-2 served the old page after the PUT through edge-1 was answered"
        );

        // api-1's link down under steady GETs: nothing fails, traffic moves to api-2 and back.
        let steady = Steady::start(c.clone(), edges.clone(), 10_000, false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.link(1, "down");
        // Past the health checks' fall count: api-1 is out of rotation.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let before = upstream_counts(&c, &admins).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = upstream_counts(&c, &admins).await;
        let grew = |b: u8| {
            API_PORTS
                .iter()
                .map(|p| {
                    let k = format!("{{backend=\"{}:{p}\"}}", h.addr(b));
                    after.get(&k).unwrap_or(&0.0) - before.get(&k).unwrap_or(&0.0)
                })
                .sum::<f64>()
        };
        assert_eq!(grew(11), 0.0, "api-1 got requests while its link was down");
        assert!(grew(12) > 0.0, "api-2 took the traffic");
        h.link(1, "up");
        let mut back = false;
        for _ in 0..60 {
            let before = upstream_counts(&c, &admins).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = upstream_counts(&c, &admins).await;
            let k = |p: u16| format!("{{backend=\"{}:{p}\"}}", h.addr(11));
            if API_PORTS
                .iter()
                .all(|&p| after.get(&k(p)) > before.get(&k(p)))
            {
                back = true;
                break;
            }
        }
        assert!(
            back,
            "api-1 never got traffic again after its link came back"
        );
        steady.finish("api-1 link down and up").await;

        // Redis stopped for a while and restarted: no failed request, no stale page after.
        let stale_url = format!("{}/reviews/meta?product_id=6", edges[1]);
        text(&c, &format!("{}/reviews/meta?product_id=6", edges[0])).await;
        let stale = text(&c, &stale_url).await;
        let steady = Steady::start(c.clone(), edges.clone(), 20_000, false);
        h.run("redis-stop");
        for a in &admins {
            wait_gauge(&c, a, "edge_invalidation_connected", 0.0).await;
        }
        post(&c, &edges[0], 6).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.run("redis-start");
        for a in &admins {
            wait_gauge(&c, a, "edge_invalidation_connected", 1.0).await;
            wait_gauge(&c, a, "edge_invalidation_publisher_connected", 1.0).await;
        }
        assert_ne!(
            text(&c, &stale_url).await,
            stale,
            "edge-2 served a page a write during the Redis outage changed"
        );
        let meta7 = format!("{}/reviews/meta?product_id=7", edges[1]);
        text(&c, &format!("{}/reviews/meta?product_id=7", edges[0])).await;
        let old = text(&c, &meta7).await;
        post(&c, &edges[0], 7).await;
        assert_eq!(
            gets_until_changed(&c, &meta7, &old).await,
            1,
            "after Redis came back, edge-2 served the old page after a POST through edge-1"
        );
        steady.finish("Redis stopped and restarted").await;

        // PostgreSQL restarted: 503 with Retry-After meanwhile, nothing beyond the timeouts.
        let steady = Steady::start(c.clone(), edges.clone(), 30_000, true);
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.run("db-stop");
        tokio::time::sleep(Duration::from_secs(3)).await;
        h.run("db-start");
        let mut ok_again = 0;
        for id in 40_000..40_400u64 {
            let r = c
                .get(format!(
                    "{}/reviews/meta?product_id={id}",
                    edges[(id % 2) as usize]
                ))
                .send()
                .await
                .unwrap();
            ok_again = if r.status() == 200 { ok_again + 1 } else { 0 };
            if ok_again == 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            ok_again, 20,
            "the stack did not recover after PostgreSQL came back"
        );
        steady.finish("PostgreSQL restarted").await;
    });
}
