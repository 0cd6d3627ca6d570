//! Runs the edge as `reviews proxy` will, for the benchmark before the CLI is wired:
//! `cargo run --release -p reviews-proxy --example edge -- --config edge.toml`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: reviews_proxy::ProxyArgs,
}

fn main() -> anyhow::Result<()> {
    reviews_proxy::run(Cli::parse().args)
}
