//! The edge's integration tests: a real edge (Pingora, real sockets, ports from 0) in front of
//! in-process axum origins on 127.0.0.1. Cache behaviour is read from `X-Cache-Status` on a
//! unique path per test, with the origin's stamp in the body proving a hit did not reach it.

mod balancing;
mod cache;
mod config;
mod framing;
mod helpers;
pub mod hit_path;
mod invalidation;
mod limits;
mod metrics;
mod miss_path;
mod slow_clients;
mod tls;
