//! Finds the closest cloudlet running an app and talks to the app over HTTP.
//!
//! `cargo run -p dme-client --example find_closest -- --org demo --app hello --version 1.0 --port 80`
//! (against `infra/dev-up`'s local region: `source .state/env` first, for the DME's CA in `EDGE_DME_CA`).

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// DME gRPC URL (https: TLS).
    #[arg(long, env = "EDGE_DME_GRPC", default_value = "https://localhost:50051")]
    dme: String,
    /// PEM file of the CA the DME's certificate chains to (for an https URL).
    #[arg(long, env = "EDGE_DME_CA")]
    ca: Option<std::path::PathBuf>,
    #[arg(long)]
    org: String,
    #[arg(long)]
    app: String,
    #[arg(long, default_value = "1.0")]
    version: String,
    /// Carrier (operator organization or MCC+MNC); empty for any.
    #[arg(long, default_value = "")]
    carrier: String,
    #[arg(long, default_value_t = 52.52)]
    lat: f64,
    #[arg(long, default_value_t = 13.40)]
    lon: f64,
    /// The app's internal TCP port to connect to.
    #[arg(long, default_value_t = 80)]
    port: i32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut dme = match &a.ca {
        Some(path) => {
            dme_client::DmeClient::connect_tls(&a.dme, &std::fs::read_to_string(path)?).await?
        }
        None => dme_client::DmeClient::connect(&a.dme).await?,
    };
    dme.register(&a.org, &a.app, &a.version, None).await?;
    let Some(found) = dme.find_cloudlet(&a.carrier, a.lat, a.lon).await? else {
        anyhow::bail!(
            "no cloudlet runs {}/{}/{} for this location and carrier",
            a.org,
            a.app,
            a.version
        );
    };
    let loc = &found.cloudlet_location;
    println!(
        "closest cloudlet at ({}, {}), app at {}",
        loc.latitude, loc.longitude, found.fqdn
    );
    let addr = found
        .address(a.port)
        .ok_or_else(|| anyhow::anyhow!("the app does not expose port {}", a.port))?;
    let mut s = tokio::net::TcpStream::connect(&addr).await?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", found.fqdn).as_bytes())
        .await?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).await?;
    println!("{addr} answered:\n{reply}");
    Ok(())
}
