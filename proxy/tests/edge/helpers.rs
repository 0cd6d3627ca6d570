//! A real edge on ports from 0 in front of in-process axum origins, one runtime per origin
//! so a test can kill an origin outright (listener and open connections) and bring it back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use reviews_proxy::{EdgeConfig, RunningEdge, Upstream};

#[derive(Default)]
pub struct OriginState {
    pub name: String,
    pub total: AtomicUsize,
    /// Requests per path+query.
    pub by_uri: Mutex<HashMap<String, usize>>,
    /// Answer this status to everything under /t/ when set.
    pub force_status: Mutex<Option<u16>>,
}

impl OriginState {
    pub fn count(&self, uri: &str) -> usize {
        self.by_uri.lock().get(uri).copied().unwrap_or(0)
    }
}

pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn record(state: &OriginState, uri: &str) -> usize {
    state.total.fetch_add(1, Ordering::SeqCst);
    let mut map = state.by_uri.lock();
    let n = map.entry(uri.to_owned()).or_insert(0);
    *n += 1;
    *n
}

/// `/t/...?cc=<Cache-Control>&status=<code>&cookie=1&delay_ms=<n>&tag=<Surrogate-Key>&pad=<n>`,
/// `&echo=1`: the body also lists the request's fields (name: value, one per line, in a
/// `"fields"` string); `&chunked=1`: the body is sent chunked, in pieces of 1,000 bytes.
async fn test_route(
    State(state): State<Arc<OriginState>>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    request_fields: HeaderMap,
) -> Response {
    let uri = uri.to_string();
    let stamp = record(&state, &uri);
    if let Some(ms) = q.get("delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let forced = *state.force_status.lock();
    let status = forced
        .or_else(|| q.get("status").and_then(|s| s.parse().ok()))
        .unwrap_or(200);
    let pad = q.get("pad").and_then(|v| v.parse().ok()).unwrap_or(0usize);
    let fields = if q.contains_key("echo") {
        let lines: Vec<String> = request_fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        serde_json::Value::from(lines.join("\n")).to_string()
    } else {
        "null".to_owned()
    };
    let body = format!(
        r#"{{"uri":"{uri}","origin":"{}","stamp":{stamp},"fields":{fields},"pad":"{}"}}"#,
        state.name,
        "x".repeat(pad)
    );
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let cc = q
        .get("cc")
        .cloned()
        .unwrap_or_else(|| "public, max-age=60".into());
    headers.insert("cache-control", HeaderValue::from_str(&cc).unwrap());
    if let Some(tag) = q.get("tag") {
        headers.insert("surrogate-key", HeaderValue::from_str(tag).unwrap());
    }
    if q.contains_key("cookie") {
        headers.insert("set-cookie", HeaderValue::from_static("session=abc"));
    }
    let status = StatusCode::from_u16(status).unwrap();
    if q.contains_key("chunked") {
        let pieces: Vec<Result<Bytes, std::io::Error>> = body
            .into_bytes()
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = axum::body::Body::from_stream(futures::stream::iter(pieces));
        return (status, headers, body).into_response();
    }
    (status, headers, body).into_response()
}

fn product(q: &HashMap<String, String>) -> String {
    q.get("product_id").cloned().unwrap_or_default()
}

async fn reviews(
    State(state): State<Arc<OriginState>>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let stamp = record(&state, &uri.to_string());
    let id = product(&q);
    let body = format!(r#"{{"product":"{id}","stamp":{stamp},"results":[]}}"#);
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("cache-control", "public, max-age=60".to_owned()),
        ("surrogate-key", format!("product-{id}")),
    ];
    (headers, body).into_response()
}

async fn create_review(State(state): State<Arc<OriginState>>, body: Bytes) -> Response {
    record(&state, "POST /reviews");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = v["product_id"].as_u64().unwrap_or(0);
    (
        StatusCode::CREATED,
        [("surrogate-key", format!("product-{id}"))],
        "Created",
    )
        .into_response()
}

/// `/echo/...`: the forwarding headers the origin received, as JSON (never cached).
async fn echo_forwarding(headers: HeaderMap) -> Response {
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| serde_json::Value::from(v.to_str().unwrap_or("?")))
            .unwrap_or(serde_json::Value::Null)
    };
    let body = serde_json::json!({
        "x-forwarded-for": get("x-forwarded-for"),
        "x-forwarded-proto": get("x-forwarded-proto"),
        "forwarded": get("forwarded"),
    });
    ([("cache-control", "no-store")], body.to_string()).into_response()
}

async fn readyz(State(state): State<Arc<OriginState>>) -> Response {
    let _ = state;
    "ok".into_response()
}

fn router(state: Arc<OriginState>) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/reviews", get(reviews).post(create_review))
        .route("/reviews/meta", get(reviews))
        .route("/t/{*rest}", get(test_route).head(test_route))
        .route("/nocache/{*rest}", get(test_route).post(test_route))
        .route("/echo/{*rest}", get(echo_forwarding))
        .with_state(state)
}

impl Origin {
    pub fn start(name: &str) -> Origin {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap(), None)
    }

    /// Starts on `addr` (to bring a killed origin back on its port), keeping `state`.
    pub fn start_on(name: &str, addr: SocketAddr, state: Option<Arc<OriginState>>) -> Origin {
        let state = state.unwrap_or_else(|| {
            Arc::new(OriginState {
                name: name.to_owned(),
                ..Default::default()
            })
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let mut tries = 0;
            loop {
                match std::net::TcpListener::bind(addr) {
                    Ok(l) => break l,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("binding {addr}: {e}"),
                }
            }
        };
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        Origin {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    /// Kills the origin: its listener and every open connection go away at once.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Brings a killed origin back on the same port with the same counters.
    pub fn revive(&mut self) {
        let mut again = Origin::start_on(&self.state.name, self.addr, Some(self.state.clone()));
        self.runtime = again.runtime.take();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const TOKEN: &str = "test-token";

/// Routes as in deploy/edge.example.toml plus `/t/*` (every parameter counts).
pub fn config(origins: &[&Origin], extra: &str) -> EdgeConfig {
    let text = format!(
        r#"
max_connections = 64
[listen]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
token = "{TOKEN}"
[upstream.health]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
[upstream.ejection]
consecutive_failures = 2
base_time = "500ms"
max_time = "2s"
[upstream.timeouts]
connect = "200ms"
read = "2s"
per_try = "2s"
[shutdown]
grace_period = "0s"
graceful_timeout = "1s"
[cache]
max_size = "64MiB"
default_ttl = "60s"
stale_while_revalidate = "5s"
stale_if_error = "5m"
lock_timeout = "3s"
[[cache.routes]]
path = "/reviews"
params = ["product_id", "page", "count", "sort"]
defaults = {{ page = "1", count = "5", sort = "relevant" }}
[[cache.routes]]
path = "/reviews/meta"
params = ["product_id"]
[[cache.routes]]
path = "/t/*"
{extra}
"#
    );
    let mut c = EdgeConfig::from_toml_unvalidated(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    c.upstream.servers = origins.iter().map(|o| Upstream::new(o.addr)).collect();
    c
}

pub struct TestEdge {
    pub edge: Option<RunningEdge>,
    pub client: reqwest::Client,
}

impl TestEdge {
    pub fn start(config: EdgeConfig) -> TestEdge {
        let edge = tokio::task::block_in_place(|| reviews_proxy::start(config)).unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        TestEdge {
            edge: Some(edge),
            client,
        }
    }

    pub fn edge(&self) -> &RunningEdge {
        self.edge.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge().listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge().admin)
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut r = self.client.get(self.url(path));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        Reply::from(r.send().await.unwrap()).await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(e) = self.edge.take() {
            tokio::task::block_in_place(|| drop(e));
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn from(r: reqwest::Response) -> Reply {
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    pub fn cache(&self) -> &str {
        self.header("x-cache-status")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The origin's stamp: which origin request produced this body.
    pub fn stamp(&self) -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", self.text()));
        v["stamp"].as_u64().unwrap()
    }
}
