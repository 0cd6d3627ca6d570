//! The Reviews API: stateless HTTP servers (axum) over SQLite or PostgreSQL (sqlx) serving the
//! contract in `spec/reviews-api.md`, plus the data tools that fill their database.
//!
//! `reviews api` is `config::ApiArgs` → `server::run`; tests call `server::start` in-process.

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
pub fn main(args: config::ApiArgs) -> anyhow::Result<ExitCode> {
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
