//! The HTTPS listeners' certificates: read from the PEM files named in `[[listen.tls]]` when
//! the edge starts (so a reload, which starts a new process, serves a renewed certificate),
//! and checked by `--check`.
//!
//! The rustls config is built here rather than by Pingora's `TlsSettings`, which in 0.9
//! panics on a bad file, offers no minimum protocol version (always TLS 1.2 and 1.3) and
//! performs the handshake before the application sees the connection; the edge hands the
//! config to Pingora's `Acceptor` and handshakes inside `Downstream`, under a connection slot
//! and the header deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora_core::listeners::tls::Acceptor;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use tokio::sync::Semaphore;

use super::session_file::Stores;
use super::sessions::SessionStore;
use crate::config::{TlsListenerConfig, TlsVersion};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listen.tls.{key} = {path:?}: cannot read it: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listen.tls.{key} = {path:?}: {reason}")]
    Content {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("listen.tls.key = {key:?} does not belong to the certificate in {cert:?}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Turns for starting TLS handshakes, so that new connections do not delay the requests of
/// connections already up.
///
/// Pingora's accept loop takes every connection waiting in the backlog at once and spawns a
/// task for each; each task's first poll computes the server's handshake flight (key
/// exchange, and a signature unless the session resumes), a few hundred microseconds. A burst
/// of connections therefore ran as a burst of handshakes, and a request arriving on a
/// connection already up waited behind all of them. NGINX accepts one connection per event
/// loop iteration (`multi_accept off`), so the requests of open connections are served
/// between any two handshakes; `perf` of both showed this (1.0 accept per `epoll_wait` for
/// NGINX, bursts for the edge; proxy README, "Measured over TLS").
///
/// Here a new connection takes a turn, one per worker thread at a time, and yields once
/// holding it: the yield defers it until the runtime has polled for I/O and run the tasks
/// that woke, so each worker starts at most one handshake per scheduler round and whatever
/// else is ready runs in between. The wait happens before the handshake, like NGINX's wait
/// in the listen backlog: it lengthens the time to connect under a burst, not the time of
/// requests on connections that are up. Idle, it costs one extra turn of the scheduler.
pub struct Turns(Semaphore);

impl Turns {
    pub fn new(threads: usize) -> Self {
        Turns(Semaphore::new(threads.max(1)))
    }

    /// Waits for this connection's turn (in arrival order: Tokio's semaphore is fair).
    pub async fn take(&self) {
        // Never closed, so `acquire` cannot fail; if it ever did, going ahead is harmless.
        let _turn = self.0.acquire().await;
        tokio::task::yield_now().await;
    }
}

/// One HTTPS listener, ready to accept.
pub struct TlsEndpoint {
    pub address: SocketAddr,
    pub acceptor: Acceptor,
    /// Its TLS sessions (none with `session_cache = 0`), handed over at a reload.
    pub sessions: Option<Arc<SessionStore>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// The certificate chain in `cert`, first the server's own.
fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read("cert", path)?;
    let content = |reason: String| TlsError::Content {
        key: "cert",
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(content("no CERTIFICATE block in the file".into()));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        key: "key",
        path: path.to_owned(),
        reason: format!("no PEM private key in the file: {e}"),
    })
}

/// The rustls config of one listener: its certificate and key, protocol versions, ALPN and
/// session store.
fn server_config(
    c: &TlsListenerConfig,
) -> Result<(ServerConfig, Option<Arc<SessionStore>>), TlsError> {
    let chain = load_chain(&c.cert)?;
    let key = load_key(&c.key)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match c.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Content {
            key: "min_version",
            path: c.cert.clone(),
            reason: e.to_string(),
        })?
        .with_no_client_auth();
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch {
            cert: c.cert.clone(),
            key: c.key.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = c.alpn.iter().map(|a| a.wire().to_vec()).collect();
    // Tickets are entries of the session store (no ticket key to encrypt sessions with, so
    // no key to rotate or share): without a store there is nothing to hand out.
    config.send_tls13_tickets = if c.session_cache == 0 {
        0
    } else {
        usize::from(c.session_tickets)
    };
    let sessions =
        (c.session_cache > 0).then(|| Arc::new(SessionStore::new(c.session_cache as usize)));
    config.session_storage = match &sessions {
        Some(store) => store.clone(),
        None => Arc::new(NoServerSessionStorage {}),
    };
    Ok((config, sessions))
}

/// Every `[[listen.tls]]` listener, built from the files on disk now.
pub fn endpoints(listeners: &[TlsListenerConfig]) -> Result<Vec<TlsEndpoint>, TlsError> {
    listeners
        .iter()
        .map(|c| {
            let (config, sessions) = server_config(c)?;
            Ok(TlsEndpoint {
                address: c.address,
                acceptor: Acceptor::from_server_config(Arc::new(config)),
                sessions,
            })
        })
        .collect()
}

/// `--check` of one listener: the files load and match (else `Err`), and warnings about
/// the certificate's validity dates.
pub fn check(c: &TlsListenerConfig) -> Result<Vec<String>, TlsError> {
    server_config(c)?;
    let chain = load_chain(&c.cert)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| TlsError::Content {
            key: "cert",
            path: c.cert.clone(),
            reason: format!("not an X.509 certificate: {e}"),
        })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let mut warnings = Vec::new();
    if validity.not_after < now {
        warnings.push(format!(
            "listen.tls.cert = {:?}: the certificate expired on {} (clients will refuse it)",
            c.cert, validity.not_after
        ));
    } else if validity.not_before > now {
        warnings.push(format!(
            "listen.tls.cert = {:?}: the certificate is not valid before {}",
            c.cert, validity.not_before
        ));
    }
    Ok(warnings)
}

/// The session stores of `endpoints`, by configured address, for the handover at a reload.
pub fn session_stores(endpoints: &[TlsEndpoint]) -> Stores {
    endpoints
        .iter()
        .filter_map(|e| Some((e.address, e.sessions.clone()?)))
        .collect()
}
