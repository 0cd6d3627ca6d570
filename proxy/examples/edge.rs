//! The edge alone, as `reviews proxy` runs it, for the benchmark: building it does not build
//! the API and its database drivers. `cargo run --release -p reviews-proxy --example edge --
//! --config edge.toml`.

use clap::Parser;

#[global_allocator]
static ALLOCATOR: reviews_proxy::Allocator = reviews_proxy::Allocator {};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: reviews_proxy::ProxyArgs,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    reviews_proxy::small_pages();
    reviews_proxy::run(Cli::parse().args)
}
