//! `shepherd`: Shepherd: metrics and health checks of one cloudlet, shipped to InfluxDB.

use clap::Parser;

/// Shepherd: metrics and health checks of one cloudlet, shipped to InfluxDB.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("shepherd is not implemented yet; see the project's open issues")
}
