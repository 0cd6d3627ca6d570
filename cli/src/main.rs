//! `reviews`: the one binary an operator deploys. Each subcommand is a thin call into the
//! crate that owns the role.

mod lifeline;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The edge's allocator for every role of the binary (see `reviews_proxy::Allocator`).
#[global_allocator]
static ALLOCATOR: reviews_proxy::Allocator = reviews_proxy::Allocator {};

#[derive(Parser)]
#[command(
    name = "reviews",
    version,
    about = "Reviews API, edge cache, data tools and load tester"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at startup; boxing the larger argument sets would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run one API server process.
    Api(reviews_api::config::ApiArgs),
    /// Load the four CSV files of the data set into SQLite or PostgreSQL.
    Import(reviews_api::import::ImportArgs),
    /// Write a realistic data set in the four-CSV format (the full size by default).
    Generate(reviews_api::generate::GenerateArgs),
    /// Run the edge: load balancer and response cache in front of the API processes.
    Proxy(reviews_proxy::ProxyArgs),
    /// Run the whole stack locally on SQLite (demo data if the database is empty).
    Up(up::UpArgs),
    /// Drive fixed-rate HTTP load at a server and report latency and errors.
    Load(reviews_loadtest::LoadArgs),
}

/// Runs an async data tool to completion on a runtime of its own.
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Api(_) | Command::Proxy(_)) {
        lifeline::watch_parent();
    }
    let result = match cli.command {
        Command::Api(args) => reviews_api::main(args),
        // The importer's own exit codes (rows rejected, verify failed) are in `import --help`.
        Command::Import(args) => block_on(reviews_api::import::run_cli(args)),
        Command::Generate(args) => reviews_api::generate::run_cli(args).map(|()| ExitCode::SUCCESS),
        Command::Proxy(args) => reviews_proxy::run(args).map(|()| ExitCode::SUCCESS),
        Command::Up(args) => up::main(args),
        Command::Load(args) => reviews_loadtest::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
