//! `edgectl`: command-line client of the edge platform.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use edge_common::pki::{CertBundle, Peer, Role, VaultPki};
use edgectl::config::{self, Config, Context};
use edgectl::mc::{Failure, Mc};
use edgectl::objects;
use edgectl::ops::{self, Output};
use serde_json::{Value, json};

/// Command-line client of the edge platform.
///
/// Through the master controller (log in first): `edgectl login --mc-url https://localhost:9900 --user
/// dev --region local`, then e.g. `edgectl show appinsts`, `edgectl create app name=web org=acme
/// version=1.0 image_path=... deployment=docker access_ports=tcp:80`, `edgectl apply -f deploy/`.
/// Directly to a regional controller (operators, scripts): `edgectl ctrl ShowAppInst`.
///
/// Exit codes: 0 done; 1 usage or local error; 2 rejected by the platform (bad input, not allowed, not
/// found); 3 accepted but failed (an error state); 4 the MC or the region could not be reached.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Region of the objects (default: the context's region; `local` for `ctrl` and `pki`).
    #[arg(long, env = "EDGE_REGION", global = true)]
    region: Option<String>,
    #[command(flatten)]
    mc: McArgs,
    /// Regional controller API address (`ctrl`: talks to the controller directly).
    #[arg(long, env = "EDGE_CTRL_API_ADDR", default_value = "127.0.0.1:55001")]
    controller: String,
    /// Directory holding the admin certificate for the controller (`ca.pem`, `cert.pem`, `key.pem`, as
    /// written by `edgectl pki issue --role admin`); without it `ctrl` dials plaintext.
    #[arg(long, env = "EDGE_CERT_DIR")]
    cert_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the master controller: a saved context, or these (which win over the context's).
#[derive(clap::Args, Debug)]
struct McArgs {
    /// The context to use (default: the current one; `edgectl context list`).
    #[arg(long, env = "EDGECTL_CONTEXT", global = true)]
    context: Option<String>,
    /// Master controller URL, e.g. https://localhost:9900.
    #[arg(long, env = "EDGE_MC_URL", global = true)]
    mc_url: Option<String>,
    /// PEM of the CA that signed the MC's HTTPS certificate (else the system's roots).
    #[arg(long, env = "EDGE_MC_CA", global = true)]
    mc_ca: Option<PathBuf>,
    /// A token from the MC's /login.
    #[arg(long, env = "EDGE_MC_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// User to log in as (with --password).
    #[arg(long, env = "EDGE_MC_USER", global = true)]
    user: Option<String>,
    #[arg(long, env = "EDGE_MC_PASSWORD", hide_env_values = true, global = true)]
    password: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Logs in to a master controller and saves the token as a context (and makes it the current one),
    /// e.g. `edgectl login --mc-url https://localhost:9900 --mc-ca ca.pem --user dev --region local`.
    /// The password comes from --password or EDGE_MC_PASSWORD.
    Login {
        /// Name of the context to save (default: "default").
        #[arg(long = "as", default_value = "default")]
        name: String,
    },
    /// Forgets the token of the current context (or --context).
    Logout,
    /// Saved contexts: `context list`, `context use NAME`.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Shows objects of a kind as a table (or -o json|yaml), filtered by field=value arguments,
    /// e.g. `edgectl show appinsts org=acme`, `edgectl show cloudlet name=berlin -o yaml`.
    Show {
        /// flavor, operatorcode, cloudlet, cloudletinfo, alertpolicy, app, clusterinst, appinst, alert.
        kind: String,
        /// Filter: field=value (dotted paths, e.g. key.name=web; org=, name=, version= for short).
        filter: Vec<String>,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
        /// Shows the objects again whenever they change (every 2 s; Ctrl-C ends).
        #[arg(long)]
        watch: bool,
    },
    /// Creates an object from field=value arguments or every object of -f FILE|DIR, following the
    /// progress of long operations, e.g. `edgectl create clusterinst org=acme name=c1
    /// cloudlet_key.organization=tmus cloudlet_key.name=berlin flavor.name=small deployment=docker`.
    Create {
        /// The kind (not with -f).
        kind: Option<String>,
        fields: Vec<String>,
        /// A YAML or JSON file (several documents allowed) or a directory of them; each document has
        /// `kind:`, optionally `region:`, and the object's fields.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// Updates the fields given of an object, e.g. `edgectl update app org=acme name=web version=1.0
    /// image_path=...`.
    Update { kind: String, fields: Vec<String> },
    /// Deletes an object named by field=value arguments, or every object of -f FILE|DIR (in reverse
    /// dependency order; those already gone are skipped).
    Delete {
        kind: Option<String>,
        fields: Vec<String>,
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// Creates or updates every object of FILE|DIR in dependency order (flavors, cloudlets, policies,
    /// apps, clusters, app instances): what exists and matches is left alone, so it can run again and
    /// again (GitOps).
    Apply {
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
    /// Organizations: `org create NAME --type developer|operator`, `org delete NAME`, `org show`.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Users: `user create NAME --email E` (password from --password), `user delete NAME`, `user show`,
    /// `user current`.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Roles: `role add --org O --member U --role DeveloperManager`, `role remove ...`, `role show`.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Regions the MC forwards to (admins): `region create NAME --address host:port`, `region delete
    /// NAME`, `region show`.
    Region {
        #[command(subcommand)]
        command: RegionCommand,
    },
    /// API keys: `apikey create --org O --permission appinsts:view`, `apikey delete ID`, `apikey show`.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// The audit log: your own calls, or an organization's with --org.
    Audit {
        #[arg(long)]
        org: Option<String>,
        /// Most entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Prints shell completions: `edgectl completion bash > /etc/bash_completion.d/edgectl`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Calls a controller method directly, e.g. `ctrl CreateFlavor '{"key":{"name":"small"},"vcpus":1,"ram":512,"disk":1}'`.
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
    },
    /// An app instance's output (a VM instance's console log) through the master controller, read on its
    /// cloudlet, e.g. `edgectl logs --org demo --name hello-1 --tail 50 --since 10m`.
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

#[derive(Subcommand, Debug)]
enum ContextCommand {
    /// Lists the contexts (the current one starred).
    List,
    /// Makes NAME the current context.
    Use { name: String },
}

#[derive(Subcommand, Debug)]
enum OrgCommand {
    Create {
        name: String,
        /// developer or operator.
        #[arg(long = "type")]
        kind: String,
    },
    Delete {
        name: String,
    },
    Show,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Creates a user with the password of --password (EDGE_MC_PASSWORD is the caller's own).
    Create {
        name: String,
        #[arg(long)]
        email: String,
        #[arg(
            long = "new-password",
            env = "EDGE_NEW_PASSWORD",
            hide_env_values = true
        )]
        new_password: String,
    },
    Delete {
        name: String,
    },
    Show,
    /// The logged-in user.
    Current,
}

#[derive(Subcommand, Debug)]
enum RoleCommand {
    Add {
        #[arg(long)]
        org: String,
        /// The user given the role.
        #[arg(long)]
        member: String,
        /// e.g. DeveloperManager, DeveloperContributor, DeveloperViewer, OperatorManager, ...
        #[arg(long)]
        role: String,
    },
    Remove {
        #[arg(long)]
        org: String,
        /// The user given the role.
        #[arg(long)]
        member: String,
        #[arg(long)]
        role: String,
    },
    Show,
}

#[derive(Subcommand, Debug)]
enum RegionCommand {
    Create {
        name: String,
        /// The regional controller's API address, host:port.
        #[arg(long)]
        address: String,
        /// The region's InfluxDB URL (metrics).
        #[arg(long)]
        influxdb: Option<String>,
    },
    Delete {
        name: String,
    },
    Show,
}

#[derive(Subcommand, Debug)]
enum ApikeyCommand {
    Create {
        #[arg(long)]
        org: String,
        /// resource:action, comma separated, e.g. appinsts:view,apps:manage.
        #[arg(long, value_delimiter = ',')]
        permission: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    Delete {
        id: String,
    },
    Show,
}

impl Args {
    /// The region of `ctrl` and `pki`: --region, else `local`.
    fn direct_region(&self) -> &str {
        self.region.as_deref().unwrap_or("local")
    }

    /// The region a command acts in: --region, else the context's.
    fn region(&self, ctx: Option<&Context>) -> anyhow::Result<String> {
        self.region
            .clone()
            .or_else(|| ctx.map(|c| c.region.clone()).filter(|r| !r.is_empty()))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no region: give --region, or log in with --region to make it the default"
                )
            })
    }

    /// The MC client and context: flags and env win over the saved context; a user and password log in
    /// afresh.
    async fn mc(&self) -> anyhow::Result<(Mc, Option<Context>)> {
        let cfg = Config::load(&config::path())?;
        let ctx = match (&self.mc.mc_url, cfg.context(self.mc.context.as_deref())) {
            (_, Ok((_, c))) => Some(c.clone()),
            (Some(_), Err(_)) => None,
            (None, Err(e)) => return Err(e),
        };
        let url = self
            .mc
            .mc_url
            .clone()
            .or_else(|| ctx.as_ref().map(|c| c.url.clone()))
            .expect("a URL from the flag or the context");
        let ca = self
            .mc
            .mc_ca
            .clone()
            .or_else(|| ctx.as_ref().and_then(|c| c.ca.clone()));
        let anonymous = Mc::new(&url, ca.as_deref(), None)?;
        let token = match (&self.mc.token, &self.mc.user, &self.mc.password) {
            (Some(t), _, _) => t.clone(),
            (None, Some(u), Some(p)) => anonymous.login(u, p).await?,
            _ => match &ctx {
                Some(c) if !c.token.is_empty() => c.token.clone(),
                _ => anyhow::bail!(
                    "not logged in: run `edgectl login`, or give --token, or --user and --password"
                ),
            },
        };
        Ok((Mc::new(&url, ca.as_deref(), Some(token))?, ctx))
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
            vault.setup_region(args.direct_region()).await?;
            println!(
                "PKI of region {} ready (mount pki_{})",
                args.direct_region(),
                args.direct_region()
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
                region: args.direct_region().to_string(),
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

/// An account or admin call: prints the MC's reply as YAML.
async fn admin(args: &Args, path: &str, body: Value) -> anyhow::Result<()> {
    let (mc, _) = args.mc().await?;
    print!("{}", serde_norway::to_string(&mc.post(path, &body).await?)?);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgectl: {e:#}");
            let code = e.downcast_ref::<Failure>().map_or(1, Failure::exit_code);
            ExitCode::from(code)
        }
    }
}

/// The request object of a kind's command from field=value arguments.
fn object(kind: &str, fields: &[String]) -> anyhow::Result<(&'static objects::Kind, Value)> {
    let kind = objects::kind(kind)?;
    Ok((kind, objects::from_args(kind, fields)?))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Login { name } => {
            let url =
                args.mc.mc_url.clone().ok_or_else(|| {
                    anyhow::anyhow!("--mc-url (EDGE_MC_URL) is required to log in")
                })?;
            let (Some(user), Some(password)) = (&args.mc.user, &args.mc.password) else {
                anyhow::bail!(
                    "--user and --password (EDGE_MC_USER, EDGE_MC_PASSWORD) are required to log in"
                );
            };
            let token = Mc::new(&url, args.mc.mc_ca.as_deref(), None)?
                .login(user, password)
                .await?;
            let path = config::path();
            let mut cfg = Config::load(&path)?;
            cfg.contexts.insert(
                name.clone(),
                Context {
                    url,
                    ca: args.mc.mc_ca.clone().map(std::path::absolute).transpose()?,
                    user: user.clone(),
                    token,
                    region: args.region.clone().unwrap_or_default(),
                },
            );
            cfg.current = name.clone();
            cfg.save(&path)?;
            println!(
                "logged in as {user}; context \"{name}\" saved in {}",
                path.display()
            );
            Ok(())
        }
        Command::Logout => {
            let path = config::path();
            let mut cfg = Config::load(&path)?;
            let name = cfg.context(args.mc.context.as_deref())?.0.to_string();
            if let Some(c) = cfg.contexts.get_mut(&name) {
                c.token.clear();
            }
            cfg.save(&path)?;
            println!("logged out of context \"{name}\"");
            Ok(())
        }
        Command::Context { command } => {
            let path = config::path();
            let mut cfg = Config::load(&path)?;
            match command {
                ContextCommand::List => {
                    for (name, c) in &cfg.contexts {
                        let star = if *name == cfg.current { "*" } else { " " };
                        println!(
                            "{star} {name}  {}  user={}  region={}",
                            c.url, c.user, c.region
                        );
                    }
                }
                ContextCommand::Use { name } => {
                    cfg.context(Some(name))?;
                    cfg.current = name.clone();
                    cfg.save(&path)?;
                    println!("context \"{name}\" is current");
                }
            }
            Ok(())
        }
        Command::Show {
            kind,
            filter,
            output,
            watch,
        } => {
            let (kind, filter) = object(kind, filter)?;
            let (mc, ctx) = args.mc().await?;
            let region = args.region(ctx.as_ref())?;
            let mut last = String::new();
            loop {
                let rows = ops::list(&mc, &region, kind, &filter).await?;
                let text = ops::print(kind, rows, *output)?;
                if text != last {
                    if *watch {
                        println!("--- {}", edge_common::now_ms() / 1000);
                    }
                    print!("{text}");
                    last = text;
                }
                if !*watch {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Command::Create { kind, fields, file } | Command::Delete { kind, fields, file } => {
            let create = matches!(args.command, Command::Create { .. });
            let (mc, ctx) = args.mc().await?;
            match (kind, file) {
                (None, Some(f)) => {
                    let docs = objects::load(f)?;
                    let region = args.region(ctx.as_ref()).ok();
                    if create {
                        for d in &docs {
                            let region = d.region.clone().or(region.clone()).ok_or_else(|| {
                                anyhow::anyhow!(
                                    "{}: no region: add region: or give --region",
                                    d.origin
                                )
                            })?;
                            ops::change(&mc, &region, "Create", d.kind, &d.object).await?;
                        }
                        Ok(())
                    } else {
                        ops::delete(&mc, region.as_deref(), docs).await
                    }
                }
                (Some(kind), None) => {
                    let (kind, obj) = object(kind, fields)?;
                    let region = args.region(ctx.as_ref())?;
                    let verb = if create { "Create" } else { "Delete" };
                    Ok(ops::change(&mc, &region, verb, kind, &obj).await?)
                }
                _ => anyhow::bail!("give a kind and field=value arguments, or -f FILE"),
            }
        }
        Command::Update { kind, fields } => {
            let (kind, obj) = object(kind, fields)?;
            let (mc, ctx) = args.mc().await?;
            let region = args.region(ctx.as_ref())?;
            Ok(ops::change(&mc, &region, "Update", kind, &obj).await?)
        }
        Command::Apply { file } => {
            let docs = objects::load(file)?;
            let (mc, ctx) = args.mc().await?;
            ops::apply(&mc, args.region(ctx.as_ref()).ok().as_deref(), docs).await
        }
        Command::Org { command } => {
            let (path, body) = match command {
                OrgCommand::Create { name, kind } => {
                    ("/auth/org/create", json!({"Name": name, "Type": kind}))
                }
                OrgCommand::Delete { name } => ("/auth/org/delete", json!({"Name": name})),
                OrgCommand::Show => ("/auth/org/show", json!({})),
            };
            admin(args, path, body).await
        }
        Command::User { command } => match command {
            UserCommand::Create {
                name,
                email,
                new_password,
            } => {
                let (mc, _) = args.mc().await?;
                let body = json!({"Name": name, "Email": email, "Passhash": new_password});
                println!("{}", mc.post("/usercreate", &body).await?);
                Ok(())
            }
            UserCommand::Delete { name } => {
                admin(args, "/auth/user/delete", json!({"Name": name})).await
            }
            UserCommand::Show => admin(args, "/auth/user/show", json!({})).await,
            UserCommand::Current => admin(args, "/auth/user/current", json!({})).await,
        },
        Command::Role { command } => {
            let (path, body) = match command {
                RoleCommand::Add { org, member, role } => (
                    "/auth/role/adduser",
                    json!({"org": org, "username": member, "role": role}),
                ),
                RoleCommand::Remove { org, member, role } => (
                    "/auth/role/removeuser",
                    json!({"org": org, "username": member, "role": role}),
                ),
                RoleCommand::Show => ("/auth/role/assignment/show", json!({})),
            };
            admin(args, path, body).await
        }
        Command::Region { command } => {
            let (path, body) = match command {
                RegionCommand::Create {
                    name,
                    address,
                    influxdb,
                } => (
                    "/auth/controller/create",
                    json!({"Region": name, "Address": address, "InfluxDB": influxdb.clone().unwrap_or_default()}),
                ),
                RegionCommand::Delete { name } => {
                    ("/auth/controller/delete", json!({"Region": name}))
                }
                RegionCommand::Show => ("/auth/controller/show", json!({})),
            };
            admin(args, path, body).await
        }
        Command::Apikey { command } => {
            let (path, body) = match command {
                ApikeyCommand::Create {
                    org,
                    permission,
                    description,
                } => {
                    let perms = permission
                        .iter()
                        .map(|p| {
                            let (resource, action) = p.split_once(':').ok_or_else(|| {
                                anyhow::anyhow!(
                                    "--permission {p}: resource:action, e.g. appinsts:view"
                                )
                            })?;
                            Ok(json!({"resource": resource, "action": action}))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    (
                        "/auth/user/create/apikey",
                        json!({"Org": org, "Description": description, "permissions": perms}),
                    )
                }
                ApikeyCommand::Delete { id } => ("/auth/user/delete/apikey", json!({"Id": id})),
                ApikeyCommand::Show => ("/auth/user/show/apikey", json!({})),
            };
            admin(args, path, body).await
        }
        Command::Audit { org, limit } => {
            let (path, body) = match org {
                Some(o) => ("/auth/audit/showorg", json!({"org": o, "limit": limit})),
                None => ("/auth/audit/showself", json!({"limit": limit})),
            };
            admin(args, path, body).await
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "edgectl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
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
        } => {
            let (mc, ctx) = args.mc().await?;
            let q = edgectl::metrics::Query {
                target: target.clone(),
                region: args.region(ctx.as_ref())?,
                org: org.clone(),
                name: name.clone(),
                selector: selector.clone(),
                last: *last,
            };
            let (path, body) = q.request()?;
            let reply = mc.post(&path, &body).await?;
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
        } => {
            let (mc, ctx) = args.mc().await?;
            let body = json!({
                "Region": args.region(ctx.as_ref())?,
                "ExecRequest": {
                    "app_inst_key": {"organization": org, "name": name},
                    "log": {"tail": tail, "since": since, "timestamps": timestamps},
                },
            });
            let reply = mc.post("/auth/ctrl/ShowLogs", &body).await?;
            print!("{}", reply["output"].as_str().unwrap_or_default());
            Ok(())
        }
        Command::Pki {
            vault_addr,
            vault_token,
            command,
        } => pki(args, VaultPki::new(vault_addr, vault_token), command).await,
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
                        .domain_name(edge_common::pki::controller_server_name(
                            args.direct_region(),
                        ));
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
