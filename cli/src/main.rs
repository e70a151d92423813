//! `edgectl`: command-line client of the edge platform.

use clap::{Parser, Subcommand};

/// Command-line client of the edge platform. Replies print as JSON lines; long operations print each
/// progress message as it comes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Regional controller API address (talks to the controller directly).
    #[arg(long, env = "EDGE_CTRL_API_ADDR", default_value = "127.0.0.1:55001")]
    controller: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Calls a controller method, e.g. `ctrl CreateFlavor '{"key":{"name":"small"},"vcpus":1,"ram":512,"disk":1}'`.
    Ctrl {
        /// Method name, e.g. ShowAppInst (see `edgectl methods`).
        method: String,
        /// The request as JSON (empty: all defaults, e.g. Show everything).
        #[arg(default_value = "")]
        request: String,
    },
    /// Lists the controller methods.
    Methods,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Methods => {
            for m in edgectl::METHODS {
                println!("{m}");
            }
            Ok(())
        }
        Command::Ctrl { method, request } => {
            let channel =
                tonic::transport::Channel::from_shared(format!("http://{}", args.controller))?
                    .connect()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot reach the controller at {}: {e}", args.controller)
                    })?;
            edgectl::call(channel, &method, &request).await
        }
    }
}
