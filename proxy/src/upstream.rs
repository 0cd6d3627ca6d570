//! What a try at a backend is built from and how its failure is named: the peer with its
//! timeouts, and the failure kinds counted in `edge_upstream_errors_total`. Shared by the
//! proxy's tries and the background refreshes.

use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};

use crate::balancer::Backend;
use crate::config::UpstreamConfig;
use crate::metrics;

/// How a try at a backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made: the request never reached the backend.
    Connect,
    /// A read or write waited longer than its timeout.
    Timeout,
    /// The connection was closed or reset under the request.
    Reset,
    /// The backend answered 502, 503 or 504.
    Status5xx,
    Other,
}

impl Failure {
    pub const LABELS: [&'static str; 5] = ["connect", "timeout", "reset", "status_5xx", "other"];

    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    pub fn of(e: &Error) -> Self {
        match e.etype() {
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::SocketError => Failure::Connect,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                Failure::Reset
            }
            ErrorType::HTTPStatus(_) => Failure::Status5xx,
            _ => Failure::Other,
        }
    }

    /// Counts the failure against its backend.
    pub fn count(self, backend: &Backend) {
        metrics::UPSTREAM_ERRORS
            .with_label_values(&[&backend.label, self.label()])
            .inc();
    }
}

/// The peer for one try at `backend`. `read` is the per-read timeout (the shorter
/// `timeouts.per_try` for retried GET/HEAD, `timeouts.read` otherwise); no timeout exceeds
/// `left`, what remains of `timeouts.total`.
pub fn peer(
    backend: &Backend,
    config: &UpstreamConfig,
    read: Duration,
    left: Duration,
) -> HttpPeer {
    let t = &config.timeouts;
    let mut peer = HttpPeer::new(backend.addr, false, String::new());
    peer.options.connection_timeout = Some(t.connect.get().min(left));
    peer.options.read_timeout = Some(read.min(left));
    peer.options.write_timeout = Some(t.write.get().min(left));
    peer.options.idle_timeout = Some(config.keepalive_timeout.get());
    peer
}
