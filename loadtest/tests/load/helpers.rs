//! Servers the tests load: axum apps on 127.0.0.1:0 and a raw TCP server that misbehaves on
//! purpose (hyper servers cannot be made to reset a connection mid-request).

use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use reviews_loadtest::plan::{Load, Plan};
use reviews_loadtest::schedule::Schedule;
use reviews_loadtest::target::{Endpoint, Targets};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Serves `app` on 127.0.0.1, port 0, in the current runtime; returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Serves `app` from a runtime of its own on a background thread, for tests that call the
/// synchronous `run` (which builds its own runtime). The thread ends with the test process.
pub fn serve_in_thread(app: Router) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tx.send(serve(app).await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// A server that reads each request and then resets the connection (SO_LINGER 0 makes close
/// send RST instead of FIN).
pub async fn serve_resets() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.set_zero_linger();
                drop(stream);
            });
        }
    });
    format!("http://{addr}")
}

/// A URL on which nothing listens: a port that was just bound and released.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// An open-model plan at `rps` for `ms` milliseconds against one endpoint, no progress lines.
pub fn plan(url: &str, endpoint: &str, rps: f64, ms: u64) -> Plan {
    let mut plan = Plan::new(
        url.parse().unwrap(),
        Load::Open(Schedule::constant(rps, Duration::from_millis(ms))),
    );
    plan.targets = Targets::single(Endpoint::parse("t", endpoint).unwrap());
    plan
}
