//! Isolation of docker cluster networks with nftables, whatever the host's `ip_forward` and firewall.
//!
//! Every cluster bridge of the cloudlet is named `edgebr<8 hex>`. One nftables table per engine and
//! cloudlet (`inet edge_<engine hash>_<cloudlet hash>`), owned by the CRM and replaced atomically after
//! every cluster change, drops:
//! - packets a container of one of these bridges sends to any other `edgebr*` bridge (another cluster, of
//!   this cloudlet or of another one on the same host), even when the host forwards packets;
//! - new connections from these bridges to the host itself, except to the cloudlet's public address
//!   (where the shared LB listens). Connections the host opens (the LB's to its backends) still get
//!   their replies.
//!
//! The table goes with the last cluster. Rules live in the kernel: they stay while the CRM is down.

use std::net::IpAddr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::{PlatformError, Result, fnv1a};

/// Prefix of every bridge interface of a cluster network (at most 15 characters in all).
pub const BRIDGE_PREFIX: &str = "edgebr";

/// The bridge interface name of cluster `key` of `cloudlet` on the engine at `docker_host`. Interface
/// names are per host, not per engine: two engines on one host (tests run one each) must never pick the
/// same, or the second would put its network on the first one's bridge.
pub fn bridge_name(docker_host: &str, cloudlet: &str, key: &str) -> String {
    format!(
        "{BRIDGE_PREFIX}{:08x}",
        fnv1a(&format!("{docker_host}\n{cloudlet}\n{key}"))
    )
}

/// Start of the name of every table of the CRMs using the engine at `docker_host`.
pub fn table_prefix(docker_host: &str) -> String {
    format!("edge_{:08x}", fnv1a(docker_host))
}

pub struct Isolation {
    table: String,
    public_addr: IpAddr,
}

impl Isolation {
    pub fn new(docker_host: &str, cloudlet: &str, public_addr: IpAddr) -> Self {
        Self {
            table: format!("{}_{:08x}", table_prefix(docker_host), fnv1a(cloudlet)),
            public_addr,
        }
    }

    /// The rules for exactly `bridges`, replacing the table's previous content in one transaction.
    fn script(&self, bridges: &[String]) -> String {
        let t = &self.table;
        // Declaring the table first makes the delete valid when it does not exist yet.
        let mut s = format!("table inet {t} {{}}\ndelete table inet {t}\n");
        if bridges.is_empty() {
            return s;
        }
        let set = bridges
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", ");
        s += &format!(
            "table inet {t} {{\n  set bridges {{ type ifname; elements = {{ {set} }} }}\n"
        );
        s += "  chain forward {\n    type filter hook forward priority filter - 10; policy accept;\n";
        for b in bridges {
            s += &format!(
                "    iifname \"{b}\" oifname != \"{b}\" oifname \"{BRIDGE_PREFIX}*\" drop\n"
            );
        }
        s += "  }\n  chain input {\n    type filter hook input priority filter - 10; policy accept;\n";
        s += "    iifname @bridges ct state established,related accept\n";
        if !self.public_addr.is_loopback() && !self.public_addr.is_unspecified() {
            let family = if self.public_addr.is_ipv4() {
                "ip"
            } else {
                "ip6"
            };
            s += &format!(
                "    iifname @bridges {family} daddr {} accept\n",
                self.public_addr
            );
        }
        s += "    iifname @bridges drop\n  }\n}\n";
        s
    }

    /// Makes the kernel's rules those of `bridges` (none: the table is removed).
    pub async fn apply(&self, bridges: &[String]) -> Result<()> {
        let script = self.script(bridges);
        let mut child = tokio::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                PlatformError::permanent(if e.kind() == std::io::ErrorKind::NotFound {
                    "cluster networks cannot be isolated: `nft` is not installed (Debian package \
                     nftables; infra/install.sh installs it)"
                        .to_string()
                } else {
                    format!("running nft to isolate cluster networks: {e}")
                })
            })?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| PlatformError::transient(format!("writing to nft: {e}")))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| PlatformError::transient(format!("waiting for nft: {e}")))?;
        if !out.status.success() {
            return Err(PlatformError::permanent(format!(
                "isolating cluster networks (nftables table {}): {}",
                self.table,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        tracing::debug!(table = %self.table, bridges = bridges.len(), "cluster isolation rules applied");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_every_bridge_and_allow_the_public_address() {
        let iso = Isolation::new(
            "unix:///run/docker.sock",
            "op/c1",
            "192.0.2.7".parse().unwrap(),
        );
        assert!(
            iso.table
                .starts_with(&table_prefix("unix:///run/docker.sock"))
        );
        let s = iso.script(&["edgebr00000001".into(), "edgebr00000002".into()]);
        assert!(
            s.contains(
                r#"iifname "edgebr00000001" oifname != "edgebr00000001" oifname "edgebr*" drop"#
            ),
            "{s}"
        );
        assert!(s.contains("ip daddr 192.0.2.7 accept"), "{s}");
        assert!(s.ends_with("    iifname @bridges drop\n  }\n}\n"), "{s}");
        // No bridges: only the removal.
        let empty = iso.script(&[]);
        assert_eq!(empty.lines().count(), 2, "{empty}");
        let bridge = bridge_name("unix:///run/docker.sock", "op/c1", "acme/k1");
        assert!(bridge.len() <= 15, "{bridge}");
        assert_ne!(
            bridge,
            bridge_name("unix:///tmp/other.sock", "op/c1", "acme/k1")
        );
    }
}
