//! `edge-bench`: Benchmarks that print ratios against raw baselines measured in the same run.

use clap::Parser;

/// Benchmarks that print ratios against raw baselines measured in the same run.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("edge-bench is not implemented yet; see the project's open issues")
}
