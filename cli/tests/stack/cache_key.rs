//! The edge's cache key never merges requests the API tells apart. Query strings are
//! generated (repeats, case, percent-encoding, `+`, empty values, defaults, unknown
//! parameters), keyed with the edge's own `cache_key` under the routes of
//! deploy/edge.example.toml, and every group of queries sharing a key is sent to a real API
//! (SQLite, a small generated data set) directly: their bodies must be byte-identical.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use proptest::prelude::*;
use reviews_proxy::RouteRule;
use reviews_proxy::cache::key::cache_key;

use crate::helpers::read;

/// A real API over a small generated data set, shared by all cases of the process.
struct Api {
    addr: SocketAddr,
    routes: Vec<RouteRule>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _api: reviews_api::server::RunningApi,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("csv");
        let db = format!("sqlite://{}", dir.path().join("reviews.db").display());
        reviews_api::generate::generate(&reviews_api::generate::GenerateOptions::new(&csv, 12))
            .unwrap();
        let api = runtime.block_on(async {
            let mut opts = reviews_api::import::ImportOptions::new(&db, &csv);
            opts.rejects = dir.path().join("rejects.csv");
            reviews_api::import::import(&opts).await.unwrap();
            let mut config = reviews_api::config::ApiConfig::default();
            config.server.listen = "127.0.0.1:0".parse().unwrap();
            config.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
            config.database.url = db.clone();
            reviews_api::server::start(&config).await.unwrap()
        });
        let example = read("deploy/edge.example.toml");
        let routes = reviews_proxy::EdgeConfig::from_toml_unvalidated(&example)
            .unwrap()
            .cache
            .routes;
        Api {
            addr: api.addr,
            routes,
            runtime,
            client: reqwest::Client::new(),
            _dir: dir,
            _api: api,
        }
    })
}

impl Api {
    /// Status and body of `GET path?query`, straight from the API.
    fn get(&self, path: &str, query: &str) -> (u16, Vec<u8>) {
        let url = format!("http://{}{path}?{query}", self.addr);
        self.runtime.block_on(async {
            let r = self.client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        })
    }

    fn key(&self, path: &str, query: &str) -> Option<String> {
        let rule = self.routes.iter().find(|r| r.matches(path))?;
        cache_key(path, Some(query), rule)
    }
}

const PATHS: [&str; 4] = ["/reviews", "/reviews/meta", "/dbreviews", "/dbmeta"];
const NAMES: [&str; 9] = [
    "product_id",
    "page",
    "count",
    "sort",
    "id",
    "Product_id",
    "SORT",
    "utm_source",
    "x",
];
const VALUES: [&str; 18] = [
    "1",
    "2",
    "3",
    "01",
    "1.0",
    " 1",
    "-1",
    "0",
    "",
    "5",
    "10",
    "relevant",
    "newest",
    "helpful",
    "Newest",
    "x",
    "99999999999999999999",
    "2 ",
];

/// One spelling of a parameter: the name and value as they appear on the wire.
fn encode(text: &str, style: u8) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        match (c, style) {
            (' ', 0) => out.push('+'),
            (' ', _) => out.push_str("%20"),
            ('_', 1) => out.push_str("%5F"),
            (c, 2) if i == 0 && c.is_ascii_alphanumeric() => {
                out.push_str(&format!("%{:02X}", c as u32))
            }
            (c, 3) if c.is_ascii_lowercase() => out.push_str(&format!("%{:02x}", c as u32)),
            (c, _) => out.push(c),
        }
    }
    out
}

fn render(pairs: &[(String, String, u8)]) -> String {
    pairs
        .iter()
        .map(|(n, v, style)| format!("{}={}", encode(n, *style), encode(v, *style)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Respellings that keep the key: another order, other encodings, unknown parameters (some
/// named like key parameters in another case), and a route default added where its
/// parameter is absent.
fn respell(pairs: &[(String, String, u8)], seed: u64) -> String {
    let mut p: Vec<(String, String, u8)> = pairs
        .iter()
        .enumerate()
        .map(|(i, (n, v, s))| {
            (
                n.clone(),
                v.clone(),
                s.wrapping_add(seed as u8).wrapping_add(i as u8) % 4,
            )
        })
        .collect();
    if seed % 2 == 1 {
        p.reverse();
    }
    if seed.is_multiple_of(3) {
        p.push(("utm_campaign".into(), "spring sale".into(), 0));
    }
    // Names outside every route's key, close to ones inside it: the API must ignore them too.
    if seed.is_multiple_of(11) {
        p.push(("Product_id".into(), "2".into(), 1));
    }
    if seed.is_multiple_of(13) {
        p.insert(0, ("SORT".into(), "newest".into(), 0));
    }
    if seed.is_multiple_of(17) {
        p.push(("count ".into(), "1".into(), 0));
    }
    let has = |p: &[(String, String, u8)], name: &str| p.iter().any(|(n, _, _)| n == name);
    if seed.is_multiple_of(5) && !has(&p, "page") {
        p.push(("page".into(), "1".into(), 0));
    }
    if seed.is_multiple_of(7) && !has(&p, "sort") {
        p.insert(0, ("sort".into(), "relevant".into(), 1));
    }
    render(&p)
}

fn pair() -> impl Strategy<Value = (String, String, u8)> {
    (0..NAMES.len(), 0..VALUES.len(), 0u8..4)
        .prop_map(|(n, v, s)| (NAMES[n].to_owned(), VALUES[v].to_owned(), s))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn queries_sharing_a_cache_key_get_identical_answers_from_the_api(
        path in 0..PATHS.len(),
        pairs in proptest::collection::vec(pair(), 0..5),
        others in proptest::collection::vec(proptest::collection::vec(pair(), 0..5), 0..4),
        seeds in proptest::collection::vec(any::<u64>(), 1..4),
    ) {
        let api = api();
        let path = PATHS[path];
        let mut queries = vec![render(&pairs)];
        queries.extend(seeds.iter().map(|&s| respell(&pairs, s)));
        // Respellings keep the key: order, encodings, defaults and unknown parameters.
        let base = api.key(path, &queries[0]);
        for q in &queries[1..=seeds.len()] {
            prop_assert_eq!(api.key(path, q), base.clone(), "{} vs {}", queries[0], q);
        }
        queries.extend(others.iter().map(|p| render(p)));
        let mut by_key: HashMap<String, Vec<&String>> = HashMap::new();
        for q in &queries {
            if let Some(k) = api.key(path, q) {
                by_key.entry(k).or_default().push(q);
            }
        }
        for (key, group) in by_key.iter().filter(|(_, g)| g.len() > 1) {
            let (status, body) = api.get(path, group[0]);
            for q in &group[1..] {
                let (s, b) = api.get(path, q);
                prop_assert!(
                    (s, &b) == (status, &body),
                    "{} and {} share the key {:?} but the API answers them differently:\n{}\n---\n{}",
                    group[0], q, key, String::from_utf8_lossy(&body[..body.len().min(300)]),
                    String::from_utf8_lossy(&b[..b.len().min(300)])
                );
            }
        }
    }
}

#[test]
fn the_seed_example_of_two_product_ids_is_never_one_entry() {
    let api = api();
    let q = "product_id=1&product_id=2";
    assert_eq!(
        api.key("/reviews", q),
        None,
        "a repeated key parameter is not cached"
    );
    let (status, body) = api.get("/reviews", q);
    assert_eq!(
        status,
        422,
        "the API refuses it, naming the field: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("product_id"));
}
