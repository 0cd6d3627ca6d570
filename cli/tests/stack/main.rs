//! The stack as an operator runs it, through the `reviews` binary: real API and edge
//! processes on ports from 0 (or free ports found first), real SQLite files, real signals.
//! One test binary for the crate, one module per concern.

mod cache_key;
mod deploy;
mod frozen_backend;
mod helpers;
mod import;
mod multihost;
mod shared_purges;
mod tls_reload;
mod up;
mod upgrade;
mod warm_cache;
