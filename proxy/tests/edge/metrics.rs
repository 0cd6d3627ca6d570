use crate::helpers::{Origin, TestEdge, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_page_is_not_empty_and_has_the_series_the_load_tester_reads() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    edge.get("/t/metrics").await;
    edge.get("/t/metrics").await;
    let m = edge.metrics().await;
    let backend = format!(
        "edge_upstream_requests_total{{backend=\"{}\"}}",
        origin.addr
    );
    for series in [
        "edge_cache_requests_total{cache_status=\"hit\"}",
        "edge_cache_requests_total{cache_status=\"miss\"}",
        "edge_cache_requests_total{cache_status=\"stale\"}",
        "edge_cache_requests_total{cache_status=\"expired\"}",
        "edge_cache_requests_total{cache_status=\"bypass\"}",
        "edge_cache_coalesced_total",
        backend.as_str(),
        "edge_requests_total{",
        "edge_request_duration_seconds_bucket{",
        "le=\"0.0005\"",
        "edge_cache_bytes",
        "edge_cache_entries",
        "edge_cache_evictions_total",
        "edge_cache_invalidations_total",
        "edge_upstream_healthy{",
        "edge_open_connections",
        "edge_open_fds",
        "edge_retries_total",
    ] {
        assert!(m.contains(series), "missing {series} in:\n{m}");
    }
}

/// Reads until the peer closes, failing if it has not after `limit` (a hang, not a speed).
fn read_until_close(addr: std::net::SocketAddr, request: &[u8]) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => Ok(String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => Err(format!(
            "{e}; the connection stayed open after: {}",
            String::from_utf8_lossy(&buf)
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_closes_when_the_client_asks_for_it() {
    let origin = Origin::start("a");
    let edge = TestEdge::start(config(&[&origin], ""));
    let admin = edge.edge().admin;
    for request in [
        &b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let answer = tokio::task::spawn_blocking(move || read_until_close(admin, request))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(request)));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
    }
}
