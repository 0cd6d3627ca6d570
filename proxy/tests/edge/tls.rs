//! HTTPS listeners with certificates made by the test (a CA and a leaf for `edge.test`),
//! against real TLS clients: reqwest (rustls, ALPN) and, for the HTTP/2 abuse cases, the `h2`
//! crate's client driven by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, date_time_ymd};
use reviews_proxy::EdgeConfig;
use reviews_proxy::config::{Alpn, TlsListenerConfig, TlsVersion};
use reviews_proxy::tls;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::helpers::{Origin, TestEdge, config};

/// A CA and certificates it signs, written as PEM files into a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and key on disk.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "reviews test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A leaf for `edge.test` named `name` in the directory; `expired` dates it 2020–2021.
    pub fn issue(&self, name: &str, expired: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["edge.test".to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "edge.test");
        if expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{name}.crt")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
        }
    }
}

pub fn listener(issued: &Issued) -> TlsListenerConfig {
    TlsListenerConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        cert: issued.cert.clone(),
        key: issued.key.clone(),
        min_version: TlsVersion::Tls12,
        alpn: vec![Alpn::H2, Alpn::Http11],
        session_cache: 32_768,
        session_tickets: 1,
    }
}

fn tls_config(origin: &Origin, listener: TlsListenerConfig, extra: &str) -> EdgeConfig {
    let mut c = config(&[origin], extra);
    c.listen.tls.push(listener);
    c
}

/// A client trusting the test CA that reaches the edge's HTTPS listener as `name`.
fn client(pki: &Pki, name: &str, addr: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap())
        .resolve(name, addr)
        .timeout(Duration::from_secs(10))
}

fn https(edge: &TestEdge, path: &str) -> String {
    format!("https://edge.test:{}{path}", edge.edge().tls[0].port())
}

fn stamp(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["stamp"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2_and_http1_over_tls_share_the_cache_and_are_labelled_by_protocol() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(&origin, listener(&pki.issue("leaf", false)), ""));
    let addr = edge.edge().tls[0];
    let h2 = client(&pki, "edge.test", addr).build().unwrap();
    let h1 = client(&pki, "edge.test", addr)
        .http1_only()
        .build()
        .unwrap();

    let first = h2.get(https(&edge, "/t/tls-shared")).send().await.unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    assert_eq!(first.headers()["x-cache-status"], "miss");
    let stamped = stamp(&first.text().await.unwrap());

    let second = h1.get(https(&edge, "/t/tls-shared")).send().await.unwrap();
    assert_eq!(second.version(), reqwest::Version::HTTP_11);
    assert_eq!(second.headers()["x-cache-status"], "hit");
    assert_eq!(stamp(&second.text().await.unwrap()), stamped);

    let plain = edge.get("/t/tls-shared").await;
    assert_eq!((plain.cache(), plain.stamp()), ("hit", stamped));
    assert_eq!(origin.state.count("/t/tls-shared"), 1);

    // A compressed hit over h2, as a browser asks for it.
    let gz = h2
        .get(https(&edge, "/t/tls-shared?pad=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 200);
    let gz = h2
        .get(https(&edge, "/t/tls-shared?pad=3000"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["x-cache-status"], "hit");
    assert_eq!(gz.headers()["content-encoding"], "gzip");

    // A write over h2 purges what it names, as over HTTP/1.1.
    let page = https(&edge, "/reviews?product_id=77");
    h2.get(&page).send().await.unwrap();
    let hit = h2.get(&page).send().await.unwrap();
    assert_eq!(hit.headers()["x-cache-status"], "hit");
    let posted = h2
        .post(https(&edge, "/reviews"))
        .header("content-type", "application/json")
        .body(r#"{"product_id":77}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let after = h2.get(&page).send().await.unwrap();
    assert_eq!(after.headers()["x-cache-status"], "miss");

    let m = edge.metrics().await;
    for protocol in ["h2", "http1_tls", "http1"] {
        let label = format!("protocol=\"{protocol}\"");
        assert!(
            m.lines()
                .any(|l| l.starts_with("edge_requests_total{") && l.contains(&label)),
            "no edge_requests_total with {label} in:\n{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alpn_offers_only_the_protocols_the_listener_names() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let mut l = listener(&pki.issue("leaf", false));
    l.alpn = vec![Alpn::Http11];
    let edge = TestEdge::start(tls_config(&origin, l, ""));
    let h2_capable = client(&pki, "edge.test", edge.edge().tls[0])
        .build()
        .unwrap();
    let r = h2_capable
        .get(https(&edge, "/t/alpn"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let mut l = listener(&pki.issue("leaf", false));
    l.min_version = TlsVersion::Tls13;
    let edge = TestEdge::start(tls_config(&origin, l, ""));
    let addr = edge.edge().tls[0];
    let old = client(&pki, "edge.test", addr)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(old.get(https(&edge, "/t/v")).send().await.is_err());
    let new = client(&pki, "edge.test", addr).build().unwrap();
    assert_eq!(
        new.get(https(&edge, "/t/v")).send().await.unwrap().status(),
        200
    );

    // The default (1.2) lets the same old client in.
    let edge12 = TestEdge::start(tls_config(
        &origin,
        listener(&pki.issue("leaf12", false)),
        "",
    ));
    let old = client(&pki, "edge.test", edge12.edge().tls[0])
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let r = old.get(https(&edge12, "/t/v")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_the_certificate_does_not_cover_is_refused_and_others_are_still_served() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(&origin, listener(&pki.issue("leaf", false)), ""));
    let addr = edge.edge().tls[0];
    let wrong = client(&pki, "shop.example", addr).build().unwrap();
    let url = format!("https://shop.example:{}/t/sni", addr.port());
    let e = wrong.get(url).send().await.unwrap_err();
    assert!(
        format!("{e:?}").contains("NotValidForName"),
        "expected a name mismatch, got {e:?}"
    );
    let right = client(&pki, "edge.test", addr).build().unwrap();
    let r = right.get(https(&edge, "/t/sni")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_certificate_is_refused_by_clients_and_check_warns_with_its_date() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let expired = pki.issue("old", true);
    let l = listener(&expired);
    let warnings = tls::check(&l).unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].contains("expired on") && warnings[0].contains("2021"),
        "{warnings:?}"
    );
    assert!(
        tls::check(&listener(&pki.issue("fresh", false)))
            .unwrap()
            .is_empty()
    );

    // Served as configured (NGINX does the same); the client refuses it.
    let edge = TestEdge::start(tls_config(&origin, l, ""));
    let c = client(&pki, "edge.test", edge.edge().tls[0])
        .build()
        .unwrap();
    let e = c.get(https(&edge, "/t/expired")).send().await.unwrap_err();
    assert!(format!("{e:?}").contains("Expired"), "{e:?}");
    assert_eq!(origin.state.count("/t/expired"), 0);
}

#[test]
fn check_names_a_missing_file_a_file_that_is_not_pem_and_a_key_of_another_certificate() {
    let pki = Pki::new();
    let a = pki.issue("a", false);
    let b = pki.issue("b", false);

    let mut l = listener(&a);
    l.cert = pki.dir.path().join("missing.crt");
    let e = tls::check(&l).unwrap_err().to_string();
    assert!(
        e.contains("listen.tls.cert") && e.contains("missing.crt"),
        "{e}"
    );

    let garbage = pki.dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let mut l = listener(&a);
    l.key = garbage;
    let e = tls::check(&l).unwrap_err().to_string();
    assert!(
        e.contains("listen.tls.key") && e.contains("garbage.key"),
        "{e}"
    );

    let mut l = listener(&a);
    l.key = b.key.clone();
    let e = tls::check(&l).unwrap_err().to_string();
    assert!(e.contains("does not belong") && e.contains("b.key"), "{e}");

    // And the edge refuses to start with it rather than panicking.
    let origin = Origin::start("a");
    let e = reviews_proxy::start(tls_config(&origin, l, ""))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("does not belong"), "{e:#}");
}

/// An HTTP/2 connection to the edge's HTTPS listener, driven by the `h2` crate's client.
async fn h2_connect(
    ca_pem: &str,
    addr: SocketAddr,
    builder: h2::client::Builder,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("edge.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, conn) = builder.handshake(tls).await.unwrap();
    (send, tokio::spawn(conn))
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://edge.test{path}"))
        .body(())
        .unwrap()
}

/// Sends `req` on its own stream; `body_follows`: the HEADERS frame does not end the stream
/// (an empty DATA frame does), which keeps the request off the h2 hit fast path.
async fn h2_fetch(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
    body_follows: bool,
) -> (http::response::Parts, Vec<u8>) {
    let (resp, mut stream) = send.send_request(req, !body_follows).unwrap();
    if body_follows {
        stream.send_data(bytes::Bytes::new(), true).unwrap();
    }
    let (parts, mut body) = resp.await.unwrap().into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (parts, bytes)
}

/// The response's fields but those that differ between two answers of one entry.
fn stable_fields(p: &http::response::Parts) -> Vec<(String, String)> {
    p.headers
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "date" | "age"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect()
}

/// An origin, an edge with one HTTPS listener in front of it, and an h2 connection to it.
async fn h2_edge() -> (
    Origin,
    TestEdge,
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(&origin, listener(&pki.issue("leaf", false)), ""));
    let (send, conn) = h2_connect(
        &pki.ca_pem(),
        edge.edge().tls[0],
        h2::client::Builder::new(),
    )
    .await;
    (origin, edge, send, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h2_hit_answered_by_the_fast_path_matches_the_proxy_paths() {
    let (origin, edge, mut send, _conn) = h2_edge().await;
    let path = "/t/h2-fast?pad=3000";
    let (filled, _) = h2_fetch(&mut send, get(path), false).await;
    assert_eq!(filled.headers["x-cache-status"], "miss");

    for accept in [None, Some("gzip")] {
        let req = |method: http::Method| {
            let mut r = get(path);
            *r.method_mut() = method;
            if let Some(a) = accept {
                r.headers_mut()
                    .insert("accept-encoding", a.parse().unwrap());
            }
            r
        };
        let (fast, fast_body) = h2_fetch(&mut send, req(http::Method::GET), false).await;
        let (slow, slow_body) = h2_fetch(&mut send, req(http::Method::GET), true).await;
        assert_eq!(fast.status, 200);
        assert_eq!(fast.headers["x-cache-status"], "hit");
        assert_eq!(
            stable_fields(&fast),
            stable_fields(&slow),
            "accept-encoding {accept:?}"
        );
        assert_eq!(fast_body, slow_body);
        assert_eq!(
            fast.headers["content-length"].to_str().unwrap(),
            fast_body.len().to_string()
        );
        let (head, head_body) = h2_fetch(&mut send, req(http::Method::HEAD), false).await;
        assert_eq!(stable_fields(&head), stable_fields(&fast), "HEAD");
        assert!(head_body.is_empty());
    }
    assert_eq!(
        origin.state.count(path),
        1,
        "every answer but the first from the cache"
    );
    let m = edge.metrics().await;
    let hits: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("edge_requests_total{")
                && l.contains("protocol=\"h2\"")
                && l.contains("cache_status=\"hit\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(hits, 6.0, "every h2 hit counted once:\n{m}");
}

/// Many hits answered together on one connection, as a browser asks for a page's resources,
/// some larger than the client's flow-control window: the edge batches the frames of a round
/// into one write and runs each hit on the connection's own task until it must wait for
/// window, so every answer must still arrive whole, each on its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_h2_hits_larger_than_the_clients_window_all_arrive_whole() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(&origin, listener(&pki.issue("leaf", false)), ""));
    let mut builder = h2::client::Builder::new();
    // 4 KiB per stream and 16 KiB for the connection: a 60 KB page needs many window updates.
    builder
        .initial_window_size(4 << 10)
        .initial_connection_window_size(16 << 10);
    let (mut send, _conn) = h2_connect(&pki.ca_pem(), edge.edge().tls[0], builder).await;
    let path = |i: usize| {
        let pad = if i.is_multiple_of(10) { 60_000 } else { 1_500 };
        format!("/t/batch/{i}?pad={pad}")
    };
    let mut filled = Vec::new();
    for i in 0..40 {
        let (parts, body) = h2_fetch(&mut send, get(&path(i)), false).await;
        assert_eq!(parts.headers["x-cache-status"], "miss");
        filled.push(body);
    }
    for round in 0..3 {
        let mut streams = tokio::task::JoinSet::new();
        for i in 0..40 {
            let mut send = send.clone();
            let req = get(&path(i));
            streams.spawn(async move { (i, h2_fetch(&mut send, req, false).await) });
        }
        let mut answered = 0;
        while let Some(done) = streams.join_next().await {
            let (i, (parts, body)) = done.unwrap();
            assert_eq!(parts.status, 200, "round {round}, stream {i}");
            assert_eq!(parts.headers["x-cache-status"], "hit", "round {round}, {i}");
            assert_eq!(body.len(), filled[i].len(), "round {round}, stream {i}");
            assert!(
                body == filled[i],
                "round {round}, stream {i}: another page's bytes"
            );
            answered += 1;
        }
        assert_eq!(answered, 40);
    }
    for i in 0..40 {
        assert_eq!(origin.state.count(&path(i)), 1, "{}", path(i));
    }
}

/// `body` gunzipped when the answer says gzip, as JSON.
fn h2_json(p: &http::response::Parts, body: &[u8]) -> serde_json::Value {
    use std::io::Read;
    let mut text = Vec::new();
    if p.headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut text)
            .unwrap();
    } else {
        text = body.to_vec();
    }
    serde_json::from_slice(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h2_miss_answered_by_the_fast_path_matches_the_proxy_path() {
    let (_origin, _edge, mut send, _conn) = h2_edge().await;
    // Sorted, and without the framing field: the proxy path sends a compressed fill without
    // a length, the fast path with one.
    let fields = |p: &http::response::Parts| {
        let mut f: Vec<_> = stable_fields(p)
            .into_iter()
            .filter(|(n, _)| n != "content-length")
            .collect();
        f.sort();
        f
    };
    let cases = [
        ("cc=public,max-age=60&pad=3000&echo=1", None, "miss"),
        ("cc=public,max-age=60&pad=3000&echo=1", Some("gzip"), "miss"),
        ("cc=no-store&echo=1", None, "miss"),
        ("status=404&echo=1", Some("gzip"), "miss"),
    ];
    for (i, (query, accept, status)) in cases.into_iter().enumerate() {
        let req = |who: &str| {
            let mut r = get(&format!("/t/h2-miss?who={who}&i={i}&{query}"));
            r.headers_mut().insert("x-custom", "yes".parse().unwrap());
            if let Some(a) = accept {
                r.headers_mut()
                    .insert("accept-encoding", a.parse().unwrap());
            }
            r
        };
        // Without a request body the fast path takes it; with one (empty), the proxy path.
        let (fast, fast_body) = h2_fetch(&mut send, req("fast"), false).await;
        let (slow, slow_body) = h2_fetch(&mut send, req("slow"), true).await;
        assert_eq!(fast.status, slow.status, "{query}");
        assert_eq!(fast.headers["x-cache-status"], status, "{query}");
        assert_eq!(fields(&fast), fields(&slow), "{query} {accept:?}");
        if let Some(l) = fast.headers.get("content-length") {
            assert_eq!(l.to_str().unwrap(), fast_body.len().to_string());
        }
        let (a, b) = (h2_json(&fast, &fast_body), h2_json(&slow, &slow_body));
        assert_eq!(a["pad"], b["pad"], "{query}");
        // The backend was sent the same fields by both paths, forwarding ones included (but
        // the framing of the empty body that sent the other request to the proxy path).
        let seen = |v: &serde_json::Value| {
            let mut f: Vec<String> = v["fields"]
                .as_str()
                .unwrap()
                .lines()
                .filter(|l| {
                    !l.starts_with("transfer-encoding:") && !l.starts_with("content-length:")
                })
                .map(str::to_owned)
                .collect();
            f.sort();
            f
        };
        assert_eq!(seen(&a), seen(&b), "{query}");
        assert!(
            seen(&a).contains(&"x-custom: yes".to_owned()),
            "{:?}",
            seen(&a)
        );
        assert!(seen(&a).contains(&"x-forwarded-proto: https".to_owned()));
    }
    // The stored one is a hit now, on the fast path.
    let (again, _) = h2_fetch(
        &mut send,
        get("/t/h2-miss?who=fast&i=0&cc=public,max-age=60&pad=3000&echo=1"),
        false,
    )
    .await;
    assert_eq!(again.headers["x-cache-status"], "hit");
}

const H2_LIMITS: &str = "[h2]\nmax_concurrent_streams = 4\nmax_resets = 20\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h2_client_opening_more_streams_than_allowed_is_bounded_and_others_are_served() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(
        &origin,
        listener(&pki.issue("leaf", false)),
        H2_LIMITS,
    ));
    let addr = edge.edge().tls[0];
    // The client ignores the edge's SETTINGS_MAX_CONCURRENT_STREAMS: 200 streams at once. On
    // a runtime of its own with one thread, its connection task cannot read the edge's
    // SETTINGS before all 200 HEADERS frames are queued.
    let ca = pki.ca_pem();
    let abuser = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut builder = h2::client::Builder::new();
            builder.initial_max_send_streams(200);
            let (mut send, conn) = h2_connect(&ca, addr, builder).await;
            let mut responses = Vec::new();
            for i in 0..200 {
                match send.send_request(get(&format!("/t/many/{i}?delay_ms=300")), true) {
                    Ok((r, _)) => responses.push(r),
                    Err(_) => break,
                }
            }
            let (mut ok, mut refused) = (0, 0);
            for r in responses {
                match r.await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => refused += 1,
                }
            }
            let _ = conn.await;
            (ok, refused)
        })
    });
    let other = client(&pki, "edge.test", addr).build().unwrap();
    let served = other
        .get(https(&edge, "/t/bystander"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);

    let (ok, refused) = tokio::task::block_in_place(|| abuser.join().unwrap());
    let reached: usize = (0..200)
        .map(|i| origin.state.count(&format!("/t/many/{i}?delay_ms=300")))
        .sum();
    assert!(reached <= 4, "{reached} requests reached the origin");
    assert!(ok <= 4 && refused >= 196, "ok {ok}, refused {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h2_client_resetting_streams_in_a_loop_is_cut_off_and_others_are_served() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(
        &origin,
        listener(&pki.issue("leaf", false)),
        H2_LIMITS,
    ));
    let addr = edge.edge().tls[0];
    let (mut send, conn) = h2_connect(&pki.ca_pem(), addr, h2::client::Builder::new()).await;
    const TRIES: usize = 5_000;
    let mut sent = 0;
    let mut cut: Option<h2::Error> = None;
    for i in 0..TRIES {
        let ready = tokio::time::timeout(Duration::from_secs(5), send.clone().ready()).await;
        let mut ready = match ready {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                cut = Some(e);
                break;
            }
            Err(_) => panic!("the connection stalled after {sent} streams"),
        };
        match ready.send_request(get(&format!("/t/reset/{i}?delay_ms=200")), true) {
            Ok((_response, mut stream)) => {
                // Long enough for the edge to take the stream and start on it (a stream reset
                // in the same packet never reaches the proxy: the codec drops it).
                tokio::time::sleep(Duration::from_millis(5)).await;
                stream.send_reset(h2::Reason::CANCEL)
            }
            Err(e) => {
                cut = Some(e);
                break;
            }
        }
        sent += 1;
        send = ready;
    }
    let conn_result = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection is closed")
        .unwrap();
    let e = conn_result
        .err()
        .or(cut)
        .expect("the edge closed the connection with an error");
    // Cut off after h2.max_resets (20) refused or abandoned streams, with at most
    // max_concurrent_streams (4) in progress: never thousands.
    assert!(
        sent <= 100,
        "{sent} streams opened and reset before the edge closed the connection"
    );
    assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e:?}");

    let other = client(&pki, "edge.test", addr).build().unwrap();
    let r = other
        .get(https(&edge, "/t/after-flood"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reached: usize = (0..sent)
        .map(|i| origin.state.count(&format!("/t/reset/{i}?delay_ms=200")))
        .sum();
    assert!(
        reached <= 20 + 4,
        "{reached} of {sent} reset requests reached the origin"
    );
    let m = edge.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("edge_h2_reset_floods_total ") && !l.ends_with(" 0")),
        "{m}"
    );
}

async fn forwarding_seen(r: reqwest::RequestBuilder) -> serde_json::Value {
    let r = r
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_is_told_the_client_and_scheme_and_never_a_clients_own_claim() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(&origin, listener(&pki.issue("leaf", false)), ""));
    let tls = client(&pki, "edge.test", edge.edge().tls[0])
        .build()
        .unwrap();

    let plain = forwarding_seen(edge.client.get(edge.url("/echo/plain"))).await;
    assert_eq!(plain["x-forwarded-for"], "127.0.0.1", "{plain}");
    assert_eq!(plain["x-forwarded-proto"], "http", "{plain}");
    assert!(plain["forwarded"].is_null(), "{plain}");
    let over_tls = forwarding_seen(tls.get(https(&edge, "/echo/tls"))).await;
    assert_eq!(over_tls["x-forwarded-for"], "127.0.0.1", "{over_tls}");
    assert_eq!(over_tls["x-forwarded-proto"], "https", "{over_tls}");

    // Behind a trusted load balancer its headers are kept and appended to.
    let trusting = TestEdge::start(config(
        &[&origin],
        "[forwarded]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    ));
    let kept = forwarding_seen(trusting.client.get(trusting.url("/echo/trusted"))).await;
    assert_eq!(kept["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{kept}");
    assert_eq!(kept["x-forwarded-proto"], "https", "{kept}");
    assert_eq!(kept["forwarded"], "for=6.6.6.6;proto=https", "{kept}");
}

/// A rustls client of the test CA, one protocol version, with rustls's default in-memory
/// session store (it keeps the tickets and session ids the edge hands out).
fn rustls_client(
    pki: &Pki,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// One HTTP/1.1 request on a new TLS connection, `Connection: close`, read to the end (so a
/// TLS 1.3 client has also read the tickets sent after the handshake). Returns the status
/// line and how the handshake went.
async fn get_on_new_connection(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    path: &str,
) -> (String, Option<rustls::HandshakeKind>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("edge.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind();
    let request = format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The edge may close without close_notify after `Connection: close`; what was read counts.
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    (text.lines().next().unwrap_or("").to_owned(), kind)
}

/// Benchmarks and browsers reconnecting with a session they were given skip the certificate
/// and its signature; NGINX's `ssl_session_cache` offers that, and so must the edge, on both
/// protocol versions (TLS 1.3 tickets, TLS 1.2 session ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_client_resumes_its_tls_session_on_either_version() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(&origin, listener(&pki.issue("leaf", false)), ""));
    let addr = edge.edge().tls[0];
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = rustls_client(&pki, version);
        let (status, kind) = get_on_new_connection(&client, addr, "/t/resume").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(kind, Some(rustls::HandshakeKind::Full), "{version:?}");
        for _ in 0..3 {
            let (status, kind) = get_on_new_connection(&client, addr, "/t/resume").await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(kind, Some(rustls::HandshakeKind::Resumed), "{version:?}");
        }
    }
}

/// `session_cache` bounds the sessions an HTTPS listener remembers, the oldest dropped
/// first; 0 turns resumption off. Clients that each hold a session of their own (distinct
/// stores) show which sessions are still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_cache_keeps_the_newest_sessions_and_zero_keeps_none() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let issued = pki.issue("leaf", false);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut small = listener(&issued);
        // Each handshake stores one session (a TLS 1.3 ticket, a TLS 1.2 session id): the
        // last four clients' are kept.
        small.session_cache = 4;
        let edge = TestEdge::start(tls_config(&origin, small, ""));
        let addr = edge.edge().tls[0];
        let clients: Vec<_> = (0..5).map(|_| rustls_client(&pki, version)).collect();
        for c in &clients {
            let (status, kind) = get_on_new_connection(c, addr, "/t/sessions").await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(kind, Some(rustls::HandshakeKind::Full));
        }
        // The newest client resumes; the oldest one's session was dropped.
        let (_, newest) = get_on_new_connection(&clients[4], addr, "/t/sessions").await;
        assert_eq!(newest, Some(rustls::HandshakeKind::Resumed), "{version:?}");
        let (_, oldest) = get_on_new_connection(&clients[0], addr, "/t/sessions").await;
        assert_eq!(oldest, Some(rustls::HandshakeKind::Full), "{version:?}");

        let mut none = listener(&issued);
        none.session_cache = 0;
        let edge = TestEdge::start(tls_config(&origin, none, ""));
        let addr = edge.edge().tls[0];
        let client = rustls_client(&pki, version);
        for _ in 0..3 {
            let (status, kind) = get_on_new_connection(&client, addr, "/t/sessions").await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(kind, Some(rustls::HandshakeKind::Full), "{version:?}");
        }
    }
}

/// A TLS 1.3 connection opened on top of the client's only handshake: the handshake is done
/// (its kind known) but the tickets sent after it are not read.
async fn open_held(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<rustls::HandshakeKind>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("edge.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind();
    (tls, kind)
}

/// `session_tickets`: the TLS 1.3 tickets a handshake hands out, each resuming one later
/// connection. With one, a client that opens two connections at once resumes one of them;
/// with two, both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_tickets_is_how_many_connections_a_client_can_resume_at_once() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let issued = pki.issue("leaf", false);
    for tickets in [1u8, 2] {
        let mut l = listener(&issued);
        l.session_tickets = tickets;
        let edge = TestEdge::start(tls_config(&origin, l, ""));
        let addr = edge.edge().tls[0];
        let client = rustls_client(&pki, &rustls::version::TLS13);
        let (_, first) = get_on_new_connection(&client, addr, "/t/tickets").await;
        assert_eq!(first, Some(rustls::HandshakeKind::Full));
        // Both open before either has read the tickets its own handshake brings.
        let (_a, a) = open_held(&client, addr).await;
        let (_b, b) = open_held(&client, addr).await;
        assert_eq!(
            a,
            Some(rustls::HandshakeKind::Resumed),
            "tickets = {tickets}"
        );
        let expected = if tickets == 2 {
            rustls::HandshakeKind::Resumed
        } else {
            rustls::HandshakeKind::Full
        };
        assert_eq!(b, Some(expected), "tickets = {tickets}");
    }
}

/// New connections take turns to start their handshakes (`tls::Turns`): a burst of them,
/// more than there are turns, is served in full, none left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_new_tls_connections_is_served_in_full() {
    let origin = Origin::start("a");
    let pki = Pki::new();
    let edge = TestEdge::start(tls_config(&origin, listener(&pki.issue("leaf", false)), ""));
    let addr = edge.edge().tls[0];
    let client = rustls_client(&pki, &rustls::version::TLS13);
    get_on_new_connection(&client, addr, "/t/burst").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, barrier) = (client.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                get_on_new_connection(&client, addr, "/t/burst").await.0
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "HTTP/1.1 200 OK");
    }
    assert_eq!(origin.state.count("/t/burst"), 1);
}
