//! HTTPS at the edge, with real processes: `reviews proxy --check` on the certificate files,
//! and a renewed certificate picked up by `reviews proxy --reload` while a client keeps
//! making new TLS connections (none may fail; the new certificate is served after).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, date_time_ymd};

use crate::helpers::{PidGuard, Stack, free_addrs, reload_command, wait_until};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "reviews test CA");
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Writes a new key and a certificate for `edge.test` to `cert` and `key` (through a
    /// rename, as certbot does), returning the certificate's DER.
    fn issue(&self, cert: &Path, key: &Path, expired: bool) -> Vec<u8> {
        let leaf_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["edge.test".to_owned()]).unwrap();
        if expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 6, 30);
        }
        let leaf = p.signed_by(&leaf_key, &self.cert, &self.key).unwrap();
        for (path, text) in [(cert, leaf.pem()), (key, leaf_key.serialize_pem())] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        leaf.der().to_vec()
    }
}

/// Adds an HTTPS listener on a free port to the stack's config.
fn add_tls_listener(s: &Stack) -> std::net::SocketAddr {
    let [addr] = free_addrs();
    let mut text = std::fs::read_to_string(s.config()).unwrap();
    text.push_str(&format!(
        "[[listen.tls]]\naddress = \"{addr}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        s.path("edge.crt").display(),
        s.path("edge.key").display()
    ));
    std::fs::write(s.config(), text).unwrap();
    addr
}

fn check(config: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reviews"))
        .args(["proxy", "--config", config, "--check"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_missing_mismatched_and_expired_certificates() {
    let s = Stack::start().await;
    let ca = Ca::new();
    add_tls_listener(&s);
    let config = s.config();

    let (ok, err) = check(&config);
    assert!(
        !ok && err.contains("listen.tls.cert") && err.contains("edge.crt"),
        "{err}"
    );

    ca.issue(&s.path("edge.crt"), &s.path("edge.key"), false);
    let (ok, err) = check(&config);
    assert!(ok && !err.contains("warning"), "{err}");

    // A key from another issue does not match the certificate.
    ca.issue(&s.path("other.crt"), &s.path("edge.key"), false);
    let (ok, err) = check(&config);
    assert!(!ok && err.contains("does not belong"), "{err}");

    ca.issue(&s.path("edge.crt"), &s.path("edge.key"), true);
    let (ok, err) = check(&config);
    assert!(
        ok,
        "an expired certificate is a warning, not an error: {err}"
    );
    assert!(
        err.contains("warning") && err.contains("expired on Jun 30"),
        "{err}"
    );
}

/// `reviews proxy --reload`, then waits for the old edge to exit. Returns the new one.
async fn reload(s: &Stack, old: crate::helpers::Proc) -> PidGuard {
    let reload = reload_command(&s.config(), &s.path("edge-new.log"))
        .status()
        .unwrap();
    assert!(reload.success(), "reviews proxy --reload failed: {reload}");
    let new = PidGuard(s.pid_in_file());
    let mut old = old;
    let status = tokio::task::spawn_blocking(move || old.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the old edge exited with {status}");
    new
}

/// One request on a new TLS connection of `client` (read to the end, so a TLS 1.3 client has
/// its tickets), and how its handshake went.
async fn handshake_kind(
    client: &Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> Option<rustls::HandshakeKind> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("edge.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind();
    tls.write_all(
        b"GET /reviews?product_id=1 HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
    kind
}

/// A reload hands the listeners' TLS sessions to the new process: clients holding a session
/// (a TLS 1.3 ticket, a TLS 1.2 session id) resume it there, where a restart would have
/// made every one of them do a full handshake at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_hands_the_tls_sessions_over_so_returning_clients_resume() {
    let s = Stack::start().await;
    let ca = Ca::new();
    let tls_addr = add_tls_listener(&s);
    ca.issue(&s.path("edge.crt"), &s.path("edge.key"), false);
    let old = s.edge("edge-old.log");
    s.ready().await;

    let clients = [&rustls::version::TLS13, &rustls::version::TLS12].map(|version| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    });
    for c in &clients {
        assert_eq!(
            handshake_kind(c, tls_addr).await,
            Some(rustls::HandshakeKind::Full)
        );
    }
    let _new = reload(&s, old).await;
    for (c, version) in clients.iter().zip(["1.3", "1.2"]) {
        assert_eq!(
            handshake_kind(c, tls_addr).await,
            Some(rustls::HandshakeKind::Resumed),
            "TLS {version} after the reload"
        );
    }
    assert!(
        !Path::new(&format!("{}.tls", s.path("upgrade.sock").display())).exists(),
        "the file of sessions is deleted once read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_a_renewed_certificate_without_failing_a_request() {
    let s = Stack::start().await;
    let ca = Ca::new();
    let tls_addr = add_tls_listener(&s);
    let old_der = ca.issue(&s.path("edge.crt"), &s.path("edge.key"), false);
    let old = s.edge("edge-old.log");
    s.ready().await;

    // New connections (and handshakes) for every request, h2 and HTTP/1.1 alternating.
    let client = |http1: bool| {
        let b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
            .resolve("edge.test", tls_addr)
            .pool_max_idle_per_host(0)
            .tls_info(true)
            .timeout(Duration::from_secs(5));
        if http1 { b.http1_only() } else { b }.build().unwrap()
    };
    let url = format!("https://edge.test:{}/reviews?product_id=1", tls_addr.port());
    let served_cert = |r: &reqwest::Response| {
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .map(<[u8]>::to_vec)
    };
    let first = client(false).get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(served_cert(&first), Some(old_der.clone()));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
        let clients = [client(false), client(true)];
        tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match clients[i % 2].get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => errors.push(format!("status {}", r.status())),
                    Err(e) => errors.push(format!("{e:?}")),
                }
            }
            errors
        })
    };
    let ok_at_least = |n: u64| {
        let ok = ok.clone();
        move || ok.load(Ordering::Relaxed) >= n
    };
    wait_until(
        "requests over TLS",
        Duration::from_secs(20),
        ok_at_least(20),
    );

    // The renewal: new key, new certificate, same paths.
    let new_der = ca.issue(&s.path("edge.crt"), &s.path("edge.key"), false);
    let _new = reload(&s, old).await;
    let after = ok.load(Ordering::Relaxed);
    wait_until(
        "requests through the new edge",
        Duration::from_secs(20),
        ok_at_least(after + 20),
    );
    stop.store(true, Ordering::Relaxed);
    let errors = load.await.unwrap();
    assert!(
        errors.is_empty(),
        "{} of {} requests failed during the reload: {:?}",
        errors.len(),
        ok.load(Ordering::Relaxed) + errors.len() as u64,
        &errors[..errors.len().min(5)]
    );
    let r = client(false).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        served_cert(&r),
        Some(new_der),
        "the renewed certificate is served"
    );
}
