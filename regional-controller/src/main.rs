use clap::Parser;

/// Regional controller: the source of truth of one region, on etcd.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("regional-controller is not implemented yet")
}
