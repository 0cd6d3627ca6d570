//! The Reviews edge: a Pingora reverse proxy in front of the stateless API servers, with
//! weighted round robin or least-outstanding balancing, active and passive health,
//! retries on another backend, and an in-memory, byte-bounded response cache (moka) that
//! coalesces misses, serves stale copies and is invalidated by the writes passing through it.
//!
//! `reviews proxy --config edge.toml` calls [`run`]; tests and `reviews up` call [`start`].

pub mod admin;
pub mod balancer;
pub mod cache;
pub mod config;
pub mod downstream;
pub mod drain;
pub mod framing;
pub mod handover;
pub mod headers;
pub mod health;
pub mod logbridge;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod refresh;
mod server;
pub mod upstream;

pub use config::{EdgeConfig, RouteRule, Upstream};
pub use server::{ProxyArgs, RunningEdge, init_logging, run, start};
