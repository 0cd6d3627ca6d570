//! `reviews`: the one binary an operator deploys. Each subcommand is a thin call into the
//! crate that owns the role.

mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
enum Command {
    /// Run one API server process.
    Api(reviews_api::config::ApiArgs),
    /// Run the whole stack locally on SQLite (demo data if the database is empty).
    Up(up::UpArgs),
    /// Drive fixed-rate HTTP load at a server and report latency and errors.
    Load(reviews_loadtest::LoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Api(args) => reviews_api::main(args),
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
