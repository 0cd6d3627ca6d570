//! The Reviews API: stateless HTTP servers (axum) over SQLite or PostgreSQL (sqlx) serving the
//! front end's wire contract (described in `api/openapi.json`, pinned byte for byte by the
//! contract tests in `api/tests/`), plus the data tools that fill their database.
//!
//! The server reads as three layers: [`http`] (routes, query and body parsing, errors as
//! 4xx naming the field), [`domain`] (validated values) and [`store`] (the two backends).
//! `reviews api` is `config::ApiArgs` → `server::run`; tests call `server::start` in-process.
//!
//! The data tools, [`import`] and [`generate`], live here rather than in a crate of their own
//! because they write the server's own schema: the importer runs the server's migrations,
//! fills the per-product aggregates the server keeps in step with its writes, and must agree
//! with it on every column's type and limit (helpfulness, characteristic ids); the generator
//! writes what the importer reads. A crate of their own would make the migrators and the
//! storage rules public API of this one, and a schema change would span two crates.
//! They never run inside the server process.

pub mod config;
pub mod domain;
pub mod generate;
pub mod http;
pub mod import;
pub mod metrics;
pub mod server;
pub mod store;

use std::process::ExitCode;

/// `reviews api`: loads the configuration, then serves (or only checks, with `--check`).
pub fn run(args: config::ApiArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    if args.check {
        print!("{}", config.to_toml());
        eprintln!("configuration OK");
        return Ok(ExitCode::SUCCESS);
    }
    reviews_shared::logging::init(&config.log);
    reviews_shared::logging::bridge_log_records();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(server::run(config))?;
    Ok(ExitCode::SUCCESS)
}
