//! `master-controller`: Master controller: the global REST API for operators and developers.

use clap::Parser;

/// Master controller: the global REST API for operators and developers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("master-controller is not implemented yet; see the project's open issues")
}
