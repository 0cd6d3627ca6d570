//! The Reviews edge: a Pingora reverse proxy in front of the stateless API servers, with
//! weighted round robin or least-outstanding balancing, active and passive health,
//! retries on another backend, and an in-memory, byte-bounded response cache (moka) that
//! coalesces misses, serves stale copies and is invalidated by the writes passing through it.
//!
//! `reviews proxy --config edge.toml` calls [`run`]; tests and `reviews up` call [`start`].

pub(crate) mod admin;
pub mod allocator;
pub(crate) mod balancer;
pub mod cache;
pub mod config;
pub(crate) mod downstream;
pub(crate) mod drain;
pub(crate) mod fetch;
pub(crate) mod forwarded;
pub(crate) mod framing;
pub(crate) mod handover;
pub(crate) mod headers;
pub(crate) mod health;
pub(crate) mod invalidation;
pub mod logbridge;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod proxy;
pub(crate) mod refresh;
mod server;
pub(crate) mod upstream;
pub(crate) mod wire;

pub use config::{EdgeConfig, RouteRule, Upstream};
/// Loading and checking the HTTPS listeners' certificates (`--check` uses it; so do tests).
pub use downstream::tls;

pub use allocator::{Allocator, small_pages};
pub use server::{ProxyArgs, RunningEdge, init_logging, start};

/// `reviews proxy`: runs the edge until it is stopped (or only checks the config, or asks the
/// running edge to reload). The same entry-point shape as every role of the `reviews` binary.
pub fn run(args: ProxyArgs) -> anyhow::Result<std::process::ExitCode> {
    server::run(args).map(|()| std::process::ExitCode::SUCCESS)
}
