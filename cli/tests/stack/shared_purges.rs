//! Purges shared across edges (`[invalidation]`): two edges in front of two API processes on
//! one SQLite file, the real Redis on 127.0.0.1:6379 (a stream of its own per test) or, for
//! the outage, a private `redis-server` this test kills and restarts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{Proc, free_addrs, reviews_env, wait_ok, wait_until};

const TOKEN: &str = "fleet-token";
const SHARED_REDIS: &str = "127.0.0.1:6379";

/// Whether a Redis answers PING at `addr`.
fn redis_answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A stream name no other test (or run) uses.
fn unique_stream(test: &str) -> String {
    format!(
        "reviews-test:{test}:{}:{}",
        std::process::id(),
        reviews_shared::invalidation::now_ms()
    )
}

/// Waits until the edge's admin listener answers and its public one accepts (Pingora starts
/// its services side by side: one can be up before the other).
async fn wait_edge(client: &reqwest::Client, listen: SocketAddr, admin: SocketAddr) {
    wait_ok(
        client,
        &format!("http://{admin}/healthz"),
        Duration::from_secs(30),
    )
    .await;
    wait_until(
        "the edge's public listener",
        Duration::from_secs(30),
        || TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok(),
    );
}

/// A private Redis without persistence, killed on drop.
struct PrivateRedis {
    addr: SocketAddr,
    proc: Option<Proc>,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        let [addr] = free_addrs();
        let mut r = PrivateRedis { addr, proc: None };
        r.restart().then_some(r)
    }

    fn restart(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.proc = Some(Proc(child));
        let a = self.addr.to_string();
        wait_until("the private redis-server", Duration::from_secs(10), || {
            redis_answers(&a)
        });
        true
    }

    fn kill(&mut self) {
        self.proc = None;
    }
}

struct Edge {
    proc: Proc,
    config: std::path::PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
}

/// Two API processes and two edges, all sharing purges through `redis`.
struct Fleet {
    dir: tempfile::TempDir,
    _apis: Vec<Proc>,
    api_addrs: Vec<SocketAddr>,
    edges: Vec<Edge>,
    client: reqwest::Client,
}

fn edge_process(config: &Path, log: &Path) -> Proc {
    reviews_env(
        &["proxy", "--config", &config.display().to_string()],
        log,
        &[] as &[(&str, &str)],
    )
}

fn invalidation_section(redis: &str, stream: &str) -> String {
    format!(
        r#"[invalidation]
url = "redis://{redis}"
stream = "{stream}"
disconnected_ttl = "2s"
reconnect_min = "50ms"
reconnect_max = "500ms"
confirm_timeout = "300ms"
"#
    )
}

impl Fleet {
    /// `apis_publish`: whether the API processes publish their writes' tags too.
    async fn start(redis: &str, stream: &str, apis_publish: bool) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let db = format!("sqlite://{}", d.join("reviews.db").display());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut apis = Vec::new();
        let mut api_addrs = Vec::new();
        for i in 0..2 {
            let mut env = vec![];
            if apis_publish {
                env.push(("REVIEWS_API__INVALIDATION__URL", format!("redis://{redis}")));
                env.push(("REVIEWS_API__INVALIDATION__STREAM", stream.to_owned()));
            }
            // One after the other: the first creates and migrates the database.
            let (p, addr) = crate::helpers::api_env(&db, &d.join(format!("api-{i}.log")), &env);
            wait_ok(
                &client,
                &format!("http://{addr}/readyz"),
                Duration::from_secs(30),
            )
            .await;
            apis.push(p);
            api_addrs.push(addr);
        }
        let mut edges = Vec::new();
        for i in 0..2 {
            let [listen, admin] = free_addrs();
            let config = d.join(format!("edge-{i}.toml"));
            let upstreams: String = api_addrs
                .iter()
                .map(|a| format!("[[upstream.servers]]\naddress = \"{a}\"\n"))
                .collect();
            std::fs::write(
                &config,
                format!(
                    r#"max_connections = 256
[listen]
address = "{listen}"
[admin]
address = "{admin}"
token = "{TOKEN}"
{upstreams}
[cache]
snapshot_path = "{d}/edge-{i}.snapshot"
[[cache.routes]]
path = "/reviews/meta"
params = ["product_id"]
[shutdown]
grace_period = "1s"
graceful_timeout = "1s"
upgrade_sock = "{d}/edge-{i}.sock"
pid_file = "{d}/edge-{i}.pid"
{inv}"#,
                    d = d.display(),
                    inv = invalidation_section(redis, stream),
                ),
            )
            .unwrap();
            let p = edge_process(&config, &d.join(format!("edge-{i}.log")));
            wait_edge(&client, listen, admin).await;
            edges.push(Edge {
                proc: p,
                config,
                listen,
                admin,
            });
        }
        let fleet = Fleet {
            dir,
            _apis: apis,
            api_addrs,
            edges,
            client,
        };
        for e in 0..2 {
            fleet
                .wait_metric(e, "edge_invalidation_connected", 1.0)
                .await;
        }
        fleet
    }

    /// SIGTERM to edge `i` (it writes its cache and stream position), then, once it has
    /// exited, `meanwhile`, then the same edge started again.
    async fn restart_edge(&mut self, i: usize, meanwhile: impl std::future::Future<Output = ()>) {
        let e = &mut self.edges[i];
        nix::sys::signal::kill(e.proc.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = e.proc.0.wait().unwrap();
        assert!(status.success(), "edge {i} stopped with {status}");
        meanwhile.await;
        let log = self.dir.path().join(format!("edge-{i}.restarted.log"));
        self.edges[i].proc = edge_process(&self.edges[i].config, &log);
        wait_edge(&self.client, self.edges[i].listen, self.edges[i].admin).await;
        self.wait_metric(i, "edge_invalidation_connected", 1.0)
            .await;
    }

    async fn metric(&self, edge: usize, series: &str) -> Option<f64> {
        let page = self
            .client
            .get(format!("http://{}/metrics", self.edges[edge].admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        page.lines()
            .find(|l| l.split_whitespace().next() == Some(series))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }

    async fn wait_metric(&self, edge: usize, series: &str, want: f64) {
        for _ in 0..400 {
            if self.metric(edge, series).await == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "edge {edge}: {series} never became {want} (now {:?}); logs in {}",
            self.metric(edge, series).await,
            self.dir.path().display()
        );
    }

    /// Purges of `edge` that waited for the other edges in vain.
    async fn timeouts(&self, edge: usize) -> f64 {
        self.metric(
            edge,
            "edge_invalidation_confirmations_total{result=\"timeout\"}",
        )
        .await
        .unwrap_or(-1.0)
    }

    /// The meta page of `product` through `edge`: cache status and body.
    async fn meta(&self, edge: usize, product: u32) -> (String, String) {
        let r = self
            .client
            .get(format!(
                "http://{}/reviews/meta?product_id={product}",
                self.edges[edge].listen
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "meta {product} through edge {edge}");
        let status = r.headers()["x-cache-status"].to_str().unwrap().to_owned();
        (status, r.text().await.unwrap())
    }

    /// Fills both edges' caches with the meta page of `product` (a hit on each proves it).
    async fn warm(&self, product: u32) -> String {
        let mut body = String::new();
        for e in 0..2 {
            self.meta(e, product).await;
            let (status, b) = self.meta(e, product).await;
            assert_eq!(status, "hit", "edge {e} caches product {product}");
            body = b;
        }
        body
    }

    async fn post_review(&self, base: SocketAddr, product: u32) {
        let r = self
            .client
            .post(format!("http://{base}/reviews"))
            .json(&write_body(product))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }

    /// Waits until `edge` serves a meta page of `product` other than `stale`, within far
    /// less than the page's 60 s max-age: only a purge explains a change.
    async fn wait_changed(&self, edge: usize, product: u32, stale: &str) -> String {
        for _ in 0..200 {
            let (_, body) = self.meta(edge, product).await;
            if body != stale {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("edge {edge} still serves the page of product {product} from before the write");
    }
}

fn write_body(product: u32) -> serde_json::Value {
    serde_json::json!({
        "product_id": product, "rating": 5, "summary": "Shared purge",
        "body": "Written through one door and read through another, as it should be.",
        "recommend": true, "name": "sam", "email": "sam@example.com",
        "photos": [], "characteristics": {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_edge_or_an_api_is_seen_through_every_edge() {
    if !redis_answers(SHARED_REDIS) {
        eprintln!("skipped: no Redis answers on {SHARED_REDIS} (.ci/run starts one)");
        return;
    }
    let stream = unique_stream("writes");
    let fleet = Fleet::start(SHARED_REDIS, &stream, true).await;
    let edge1 = fleet.edges[0].listen;

    // A write through edge 1: its answer comes once edge 2 has purged too, so the very
    // next read through edge 2 shows it.
    let before = fleet.warm(7).await;
    fleet.post_review(edge1, 7).await;
    let (status, after) = fleet.meta(1, 7).await;
    assert_eq!(
        status, "miss",
        "edge 2 purged before edge 1 answered the write"
    );
    assert_ne!(after, before);
    assert!(
        after.contains("\"5\":\"1\""),
        "the new rating shows: {after}"
    );
    assert_eq!(fleet.meta(0, 7).await.1, after, "edge 1 agrees");

    // A write that reaches an API process directly: the API publishes and answers once
    // both edges have purged.
    let before = fleet.warm(8).await;
    fleet.post_review(fleet.api_addrs[1], 8).await;
    for e in 0..2 {
        let (status, now) = fleet.meta(e, 8).await;
        assert_eq!(status, "miss", "edge {e} purged before the API answered");
        assert_ne!(now, before);
    }

    // An admin purge on edge 2 reaches edge 1 before edge 2 answers it.
    fleet.warm(9).await;
    let r = fleet
        .client
        .post(format!(
            "http://{}/purge?tag=product-9",
            fleet.edges[1].admin
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let said = r.text().await.unwrap();
    assert!(
        said.contains("every other live edge has applied it"),
        "{said}"
    );
    assert_eq!(
        fleet.meta(0, 9).await.0,
        "miss",
        "edge 1 dropped product 9 after edge 2's admin purge"
    );

    // What the metrics say: edge 2 applied edge 1's and the API's purges, and nothing
    // waited in vain.
    let applied = fleet
        .metric(1, "edge_invalidation_applied_total{kind=\"tags\"}")
        .await
        .unwrap();
    assert!(applied >= 2.0, "edge 2 applied {applied} tag purges");
    let published = fleet
        .metric(0, "edge_invalidation_published_total")
        .await
        .unwrap();
    assert!(published >= 1.0, "edge 1 published {published}");
    for e in 0..2 {
        let confirmed = fleet
            .metric(
                e,
                "edge_invalidation_confirmations_total{result=\"applied\"}",
            )
            .await;
        assert_eq!(confirmed, Some(1.0), "edge {e}: one confirmed purge");
        let late = fleet
            .metric(
                e,
                "edge_invalidation_confirmations_total{result=\"timeout\"}",
            )
            .await;
        assert_eq!(late, Some(0.0), "edge {e}: no purge waited in vain");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_edge_delays_writes_only_until_it_counts_as_gone() {
    if !redis_answers(SHARED_REDIS) {
        eprintln!("skipped: no Redis answers on {SHARED_REDIS} (.ci/run starts one)");
        return;
    }
    let mut fleet = Fleet::start(SHARED_REDIS, &unique_stream("frozen"), false).await;
    let edge1 = fleet.edges[0].listen;
    let before = fleet.warm(31).await;

    // Edge 2 frozen: a write through edge 1 still answers (after confirm_timeout) ...
    let frozen = fleet.edges[1].proc.pid();
    nix::sys::signal::kill(frozen, nix::sys::signal::Signal::SIGSTOP).unwrap();
    fleet.post_review(edge1, 31).await;
    assert_eq!(
        fleet.timeouts(0).await,
        1.0,
        "the write waited for edge 2 in vain"
    );
    // ... and once edge 2's last report has expired, writes no longer wait for it.
    tokio::time::sleep(
        reviews_shared::invalidation::readers::READER_SILENCE + Duration::from_millis(500),
    )
    .await;
    fleet.post_review(edge1, 32).await;
    assert_eq!(
        fleet.timeouts(0).await,
        1.0,
        "a silent edge is not waited for"
    );

    // Thawed, it catches up from the stream rather than serving the old page.
    nix::sys::signal::kill(frozen, nix::sys::signal::Signal::SIGCONT).unwrap();
    fleet.wait_changed(1, 31, &before).await;

    // An edge that stops withdraws at once: a write right after does not wait for it.
    nix::sys::signal::kill(frozen, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = fleet.edges[1].proc.0.wait().unwrap();
    assert!(status.success(), "edge 2 stopped with {status}");
    fleet.post_review(edge1, 33).await;
    assert_eq!(
        fleet.timeouts(0).await,
        1.0,
        "a stopped edge is not waited for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_outage_no_edge_serves_a_page_a_write_changed() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: redis-server is not installed (.ci/run installs it)");
        return;
    };
    let addr = redis.addr.to_string();
    let fleet = Fleet::start(&addr, &unique_stream("outage"), false).await;
    // A purge both edges have read: edge 2's position in the stream is a real entry.
    let seen = fleet.warm(12).await;
    fleet.post_review(fleet.edges[0].listen, 12).await;
    fleet.wait_changed(1, 12, &seen).await;
    let before = fleet.warm(11).await;

    redis.kill();
    for e in 0..2 {
        fleet
            .wait_metric(e, "edge_invalidation_connected", 0.0)
            .await;
    }
    // Requests never wait for Redis: the write and reads through both edges all answer.
    fleet.post_review(fleet.edges[0].listen, 11).await;
    for _ in 0..10 {
        for e in 0..2 {
            fleet.meta(e, 11).await;
        }
    }
    // The writing edge purged its own copy at once.
    assert_ne!(fleet.meta(0, 11).await.1, before);

    // Redis comes back empty (no persistence): the stream no longer holds what edge 2 saw
    // last, so edge 2 drops everything before it reads again.
    assert!(redis.restart());
    for e in 0..2 {
        fleet
            .wait_metric(e, "edge_invalidation_connected", 1.0)
            .await;
    }
    let (_, now) = fleet.meta(1, 11).await;
    assert_ne!(now, before, "edge 2 served the page from before the write");
    assert!(
        fleet
            .metric(1, "edge_invalidation_applied_total{kind=\"gap\"}")
            .await
            .unwrap()
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_applies_the_purges_made_while_it_was_down() {
    if !redis_answers(SHARED_REDIS) {
        eprintln!("skipped: no Redis answers on {SHARED_REDIS} (.ci/run starts one)");
        return;
    }
    let mut fleet = Fleet::start(SHARED_REDIS, &unique_stream("restart"), false).await;
    // A purge read by edge 2, so its position is an entry of the stream.
    let seen = fleet.warm(21).await;
    fleet.post_review(fleet.edges[0].listen, 21).await;
    fleet.wait_changed(1, 21, &seen).await;
    let before = fleet.warm(22).await;

    let writer = fleet.edges[0].listen;
    let (client, body) = (fleet.client.clone(), write_body(22));
    fleet
        .restart_edge(1, async move {
            let r = client
                .post(format!("http://{writer}/reviews"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        })
        .await;
    // Its cache came back from the snapshot (product 21's page is a hit) ...
    assert_eq!(fleet.meta(1, 21).await.0, "hit", "edge 2 restarted warm");
    // ... and without the page the write changed while it was down.
    let (_, now) = fleet.meta(1, 22).await;
    assert_ne!(
        now, before,
        "edge 2 served a page from before a write made while it was down"
    );
    assert_eq!(
        fleet
            .metric(1, "edge_invalidation_applied_total{kind=\"gap\"}")
            .await,
        Some(0.0),
        "it resumed from its position rather than dropping its cache"
    );
}
