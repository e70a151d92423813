//! `crm`: Cloudlet Resource Manager: the agent that provisions clusters and apps on one cloudlet.

use clap::Parser;

/// Cloudlet Resource Manager: the agent that provisions clusters and apps on one cloudlet.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("crm is not implemented yet; see the project's open issues")
}
