//! The load tester (`reviews load`). Being written.

/// Command-line arguments of `reviews load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {}

pub fn run(_args: LoadArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the load tester is not built yet")
}
