//! `edgectl`: command-line client of the edge platform.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use edge_common::pki::{CertBundle, Peer, Role, VaultPki};

/// Command-line client of the edge platform. Replies print as JSON lines; long operations print each
/// progress message as it comes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Regional controller API address (talks to the controller directly).
    #[arg(long, env = "EDGE_CTRL_API_ADDR", default_value = "127.0.0.1:55001")]
    controller: String,
    /// Directory holding the admin certificate for the controller (`ca.pem`, `cert.pem`, `key.pem`, as
    /// written by `edgectl pki issue --role admin`); without it edgectl dials plaintext.
    #[arg(long, env = "EDGE_CERT_DIR")]
    cert_dir: Option<PathBuf>,
    /// Region of the controller (names its certificate: controller.<region>.edge).
    #[arg(long, env = "EDGE_REGION", default_value = "local")]
    region: String,
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
    /// Metrics of an app, cluster or cloudlet through the master controller, as a table with trends,
    /// e.g. `edgectl metrics app --org demo --name hello --selector cpu,mem`.
    Metrics {
        /// app, cluster or cloudlet.
        target: String,
        /// Organization of the app, cluster or cloudlet.
        #[arg(long)]
        org: String,
        /// Its name (all of the organization's when empty).
        #[arg(long, default_value = "")]
        name: String,
        /// app: cpu, mem, disk, network, connections; cluster: cpu, mem, disk, network; cloudlet:
        /// utilization. Comma separated, or * for all.
        #[arg(long, default_value = "*")]
        selector: String,
        /// Most samples per series.
        #[arg(long, default_value_t = 20)]
        last: u64,
        /// table or json (the MC's reply).
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
        #[command(flatten)]
        mc: McArgs,
    },
    /// An app instance's output (a VM instance's console log) through the master controller, read on its
    /// cloudlet, e.g. `edgectl --region local logs --org demo --name hello --tail 50 --since 10m`.
    Logs {
        /// Organization of the app instance.
        #[arg(long)]
        org: String,
        /// Name of the app instance.
        #[arg(long)]
        name: String,
        /// The last this many lines (0: the last 1000).
        #[arg(long, default_value_t = 0)]
        tail: i32,
        /// Only lines since a duration ago (30s, 5m, 3h) or an RFC 3339 time (containers).
        #[arg(long, default_value = "")]
        since: String,
        /// Prefix each line with its time (containers).
        #[arg(long)]
        timestamps: bool,
        #[command(flatten)]
        mc: McArgs,
    },
    /// The region's PKI in Vault/OpenBao (infra: needs a Vault token allowed to manage PKI mounts).
    Pki {
        #[arg(long, env = "VAULT_ADDR")]
        vault_addr: String,
        #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
        vault_token: String,
        #[command(subcommand)]
        command: PkiCommand,
    },
}

/// How to reach and log in to the master controller.
#[derive(clap::Args, Debug)]
struct McArgs {
    /// Master controller URL.
    #[arg(long, env = "EDGE_MC_URL", default_value = "https://localhost:9900")]
    mc_url: String,
    /// PEM of the CA that signed the MC's HTTPS certificate (else the system's roots).
    #[arg(long, env = "EDGE_MC_CA")]
    mc_ca: Option<PathBuf>,
    /// A token from the MC's /login.
    #[arg(long, env = "EDGE_MC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// User to log in as (with --password) when no token is given.
    #[arg(long, env = "EDGE_MC_USER")]
    user: Option<String>,
    #[arg(long, env = "EDGE_MC_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl McArgs {
    /// POSTs `body` to `path` with a token (logging in first when needed); the reply, or the MC's
    /// error message.
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &self.mc_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("reading --mc-ca {}: {e}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        let http = b.build()?;
        let url = self.mc_url.trim_end_matches('/');
        let call = async |path: &str, token: Option<&str>, body: &serde_json::Value| {
            let mut r = http.post(format!("{url}{path}")).json(body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach the master controller at {url}: {e}"))?;
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            if !status.is_success() {
                anyhow::bail!(
                    "{}: {}",
                    status.as_u16(),
                    v["message"].as_str().unwrap_or("no message")
                );
            }
            Ok(v)
        };
        let token = match (&self.token, &self.user, &self.password) {
            (Some(t), _, _) => t.clone(),
            (None, Some(u), Some(p)) => {
                let v = call(
                    "/api/v1/login",
                    None,
                    &serde_json::json!({"username": u, "password": p}),
                )
                .await?;
                v["token"].as_str().unwrap_or_default().to_string()
            }
            _ => anyhow::bail!("log in with --token (EDGE_MC_TOKEN), or --user and --password"),
        };
        call(path, Some(&token), &body).await
    }
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Creates what is missing: the deployment's root CA, the region's intermediate CA, one role per
    /// component. Safe to run again.
    Setup,
    /// Issues a certificate of a component role into DIR (`ca.pem`, `cert.pem`, `key.pem`, mode 0600),
    /// e.g. `pki issue --role admin --out ~/.edgectl/local` for edgectl's direct mode.
    Issue {
        /// mc, controller, dme or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS names (servers), comma separated.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Extra IP addresses (servers), comma separated.
        #[arg(long, value_delimiter = ',')]
        ip: Vec<String>,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
}

fn read(dir: &std::path::Path, f: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(dir.join(f))
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.join(f).display()))
}

/// Writes `text` to `path` readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

async fn pki(args: &Args, vault: VaultPki, command: &PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Setup => {
            vault.setup_region(&args.region).await?;
            println!(
                "PKI of region {} ready (mount pki_{})",
                args.region, args.region
            );
        }
        PkiCommand::Issue {
            role,
            out,
            dns,
            ip,
            hours,
        } => {
            let role = Role::parse(role)
                .filter(|r| !r.per_cloudlet())
                .ok_or_else(|| anyhow::anyhow!("--role: one of mc, controller, dme, admin (CRMs get theirs with their access key)"))?;
            let peer = Peer {
                region: args.region.clone(),
                role,
                cloudlet: None,
            };
            let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
            let ip: Vec<&str> = ip.iter().map(String::as_str).collect();
            let cert: CertBundle = vault
                .issue(&peer, &dns, &ip, Duration::from_secs(hours * 3600))
                .await?;
            std::fs::create_dir_all(out)?;
            write_private(&out.join("ca.pem"), &cert.ca)?;
            write_private(&out.join("cert.pem"), &cert.chain)?;
            write_private(&out.join("key.pem"), &cert.key)?;
            println!(
                "{} certificate {} written to {}",
                role.as_str(),
                peer.uri(),
                out.display()
            );
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.command {
        Command::Methods => {
            for m in edgectl::METHODS {
                println!("{m}");
            }
            Ok(())
        }
        Command::Metrics {
            target,
            org,
            name,
            selector,
            last,
            output,
            mc,
        } => {
            let q = edgectl::metrics::Query {
                target: target.clone(),
                region: args.region.clone(),
                org: org.clone(),
                name: name.clone(),
                selector: selector.clone(),
                last: *last,
            };
            let (path, body) = q.request()?;
            let reply = mc.post(&path, body).await?;
            match output.as_str() {
                "json" => println!("{reply}"),
                "table" => print!("{}", edgectl::metrics::render(&reply)),
                other => anyhow::bail!("-o {other}: one of table, json"),
            }
            Ok(())
        }
        Command::Logs {
            org,
            name,
            tail,
            since,
            timestamps,
            mc,
        } => {
            let body = serde_json::json!({
                "Region": args.region,
                "ExecRequest": {
                    "app_inst_key": {"organization": org, "name": name},
                    "log": {"tail": tail, "since": since, "timestamps": timestamps},
                },
            });
            let reply = mc.post("/api/v1/auth/ctrl/ShowLogs", body).await?;
            print!("{}", reply["output"].as_str().unwrap_or_default());
            Ok(())
        }
        Command::Pki {
            vault_addr,
            vault_token,
            command,
        } => pki(&args, VaultPki::new(vault_addr, vault_token), command).await,
        Command::Ctrl { method, request } => {
            let endpoint = match &args.cert_dir {
                Some(dir) => {
                    let tls = tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(read(
                            dir, "ca.pem",
                        )?))
                        .identity(tonic::transport::Identity::from_pem(
                            read(dir, "cert.pem")?,
                            read(dir, "key.pem")?,
                        ))
                        .domain_name(edge_common::pki::controller_server_name(&args.region));
                    tonic::transport::Channel::from_shared(format!("https://{}", args.controller))?
                        .tls_config(tls)?
                }
                None => {
                    tonic::transport::Channel::from_shared(format!("http://{}", args.controller))?
                }
            };
            let channel = endpoint.connect().await.map_err(|e| {
                anyhow::anyhow!("cannot reach the controller at {}: {e}", args.controller)
            })?;
            let result = edgectl::call(channel, method, request).await;
            match (&args.cert_dir, result) {
                // A plaintext call to an mTLS controller fails as a transport or HTTP/2 error.
                (None, Err(e))
                    if ["h2 protocol error", "transport error"]
                        .iter()
                        .any(|m| e.to_string().contains(m)) =>
                {
                    Err(anyhow::anyhow!(
                        "{e}: the controller serves mTLS; give --cert-dir (EDGE_CERT_DIR) with an admin certificate from `edgectl pki issue --role admin`"
                    ))
                }
                (_, r) => r,
            }
        }
    }
}
