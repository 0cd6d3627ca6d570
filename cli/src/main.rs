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

fn main() -> ExitCode {
    // Before any role starts its threads (see `reviews_proxy::small_pages` for the numbers).
    reviews_proxy::small_pages();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Api(_) | Command::Proxy(_)) {
        lifeline::watch_parent();
    }
    // Every role has the same entry point: `run(args) -> anyhow::Result<ExitCode>`, building
    // whatever runtime it needs. The importer's and the load tester's own exit codes are in
    // their `--help`.
    let result = match cli.command {
        Command::Api(args) => reviews_api::run(args),
        Command::Import(args) => reviews_api::import::run(args),
        Command::Generate(args) => reviews_api::generate::run(args),
        Command::Proxy(args) => reviews_proxy::run(args),
        Command::Up(args) => up::run(args),
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
