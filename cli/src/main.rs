//! `edgectl`: edgectl: command-line client of the master controller REST API.

use clap::Parser;

/// edgectl: command-line client of the master controller REST API.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("edgectl is not implemented yet; see the project's open issues")
}
