//! `dme`: Distributed Matching Engine: the MobiledgeX-compatible edge discovery API.

use clap::Parser;

/// Distributed Matching Engine: the MobiledgeX-compatible edge discovery API.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("dme is not implemented yet; see the project's open issues")
}
