//! Certificates from the region's Vault/OpenBao PKI, and who a certificate says its holder is.
//!
//! Layout in Vault: one root CA per deployment (`pki_root`), one intermediate CA per region
//! (`pki_<region>`), and one role per component in each region: `mc`, `controller`, `dme`, `crm`,
//! `shepherd`, `admin`. A certificate's identity is its URI SAN:
//!
//! - `edge://<region>/<role>` for `mc`, `controller`, `dme`, `admin`;
//! - `edge://<region>/crm/<organization>/<cloudlet>/<key id>` (and `shepherd`), where the key id names the
//!   cloudlet access key the certificate was issued under, so rotating the key ends those certificates.
//!
//! Each role may only issue its own URIs (`allowed_uri_sans`). A controller trusts its own region's
//! intermediate only, so a certificate of another region (another CA) is refused at the handshake.

use std::time::Duration;

use serde_json::{Value, json};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Components that get certificates.
pub const ROLES: &[Role] = &[
    Role::Mc,
    Role::Controller,
    Role::Dme,
    Role::Crm,
    Role::Shepherd,
    Role::Admin,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Mc,
    Controller,
    Dme,
    Crm,
    Shepherd,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Mc => "mc",
            Role::Controller => "controller",
            Role::Dme => "dme",
            Role::Crm => "crm",
            Role::Shepherd => "shepherd",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ROLES.iter().copied().find(|r| r.as_str() == s)
    }

    /// Whether the role's certificates name a cloudlet.
    pub fn per_cloudlet(self) -> bool {
        matches!(self, Role::Crm | Role::Shepherd)
    }

    /// Longest lifetime Vault issues for the role.
    fn max_ttl(self) -> &'static str {
        match self {
            Role::Crm | Role::Shepherd => "24h",
            _ => "8760h",
        }
    }
}

/// Who a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub region: String,
    pub role: Role,
    /// (organization, name, access key id) of a CRM's or Shepherd's cloudlet
    pub cloudlet: Option<(String, String, String)>,
}

impl Peer {
    pub fn uri(&self) -> String {
        match &self.cloudlet {
            Some((org, name, key)) => format!(
                "edge://{}/{}/{org}/{name}/{key}",
                self.region,
                self.role.as_str()
            ),
            None => format!("edge://{}/{}", self.region, self.role.as_str()),
        }
    }

    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("edge://")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let role = Role::parse(parts.get(1)?)?;
        let cloudlet = match (role.per_cloudlet(), parts.len()) {
            (true, 5) => Some((parts[2].into(), parts[3].into(), parts[4].into())),
            (false, 2) => None,
            _ => return None,
        };
        Some(Self {
            region: parts[0].into(),
            role,
            cloudlet,
        })
    }

    /// The identity in a peer's certificate chain (its first certificate's `edge://` URI SAN).
    pub fn of_certs(certs: &[tonic::transport::CertificateDer<'static>]) -> Option<Self> {
        let cert = webpki::EndEntityCert::try_from(certs.first()?).ok()?;
        cert.valid_uri_names().find_map(Self::parse)
    }

    /// The identity of the caller of a gRPC request, from its TLS client certificate.
    pub fn of_request<T>(req: &tonic::Request<T>) -> Option<Self> {
        Self::of_certs(&req.peer_certs()?)
    }
}

/// The DNS name in the controller's server certificate, which its clients verify.
pub fn controller_server_name(region: &str) -> String {
    format!("controller.{}.edge", region.to_ascii_lowercase())
}

/// The id of a cloudlet access key (its public half) that CRM certificates carry.
pub fn access_key_id(public_key: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key.as_bytes());
    crate::vault::hex(&d.as_ref()[..8])
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("Vault at {addr}: {path}: {message}")]
    Vault {
        addr: String,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A certificate with its key, as PEM.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CertBundle {
    /// the certificate followed by the issuing CA
    pub chain: String,
    pub key: String,
    /// the region's CA (trust anchor)
    pub ca: String,
    /// unix seconds
    pub expires_at: i64,
}

impl CertBundle {
    /// Seconds until the certificate expires (negative once it has).
    pub fn remaining(&self) -> i64 {
        self.expires_at - crate::now_ms() / 1000
    }

    /// When to renew: after two thirds of the lifetime left at `issued` (unix seconds).
    pub fn renew_in(&self, issued: i64) -> Duration {
        let life = (self.expires_at - issued).max(0);
        let at = issued + life * 2 / 3;
        Duration::from_secs((at - crate::now_ms() / 1000).max(0) as u64)
    }

    /// TLS settings of a client presenting this certificate to a server named `server_name`.
    pub fn client_tls(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.chain, &self.key))
            .domain_name(server_name)
    }

    /// TLS settings of a server presenting this certificate and demanding client certificates from its
    /// region's CA (`optional`: the handshake also succeeds without one; handlers then refuse).
    pub fn server_tls(&self, optional: bool) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.chain, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(optional)
    }
}

/// rustls settings of an HTTPS server from PEM files (certificate chain, private key); no client
/// certificates asked.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, PkiError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        PkiError::Invalid(format!("reading TLS {what} {}: {e}", p.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("certificate", cert, &e))?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, &e))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, private))
        .map_err(|e| bad("certificate and key", cert, &e))
}

/// TLS settings of a client without a certificate of its own (a CRM asking for its first one).
pub fn anonymous_client_tls(ca: &str, server_name: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(server_name)
}

/// A key pair and a certificate signing request for it: `(csr PEM, private key PEM)`.
pub fn new_csr() -> Result<(String, String), PkiError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::Invalid(format!("generating a key pair: {e}")))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| PkiError::Invalid(format!("building a CSR: {e}")))?;
    Ok((csr, key.serialize_pem()))
}

/// The PKI mounts of a Vault/OpenBao server.
#[derive(Clone)]
pub struct VaultPki {
    http: reqwest::Client,
    addr: String,
    token: String,
}

impl std::fmt::Debug for VaultPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultPki({})", self.addr)
    }
}

fn mount(region: &str) -> String {
    format!("pki_{region}")
}

impl VaultPki {
    pub fn new(addr: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
            addr: addr.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// One Vault call; the reply's `data` (Null for an empty reply).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, PkiError> {
        let err = |message: String| PkiError::Vault {
            addr: self.addr.clone(),
            path: path.to_string(),
            message,
        };
        let url = format!("{}/v1/{path}", self.addr);
        let mut req = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url),
        }
        .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!("{status}: {}", text.trim())));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        Ok(v.get("data").cloned().unwrap_or(v))
    }

    /// The KV v2 mount `mount` of the same Vault.
    pub fn kv(&self, mount: &str) -> Result<crate::vault::Kv, crate::vault::VaultError> {
        crate::vault::Kv::new(&self.addr, &self.token, mount)
    }

    /// Creates what is missing of the deployment's root CA, `region`'s intermediate CA and its roles.
    /// Safe to run again (each start of `infra/dev-up`, each test).
    pub async fn setup_region(&self, region: &str) -> Result<(), PkiError> {
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(PkiError::Invalid(format!(
                "region \"{region}\": letters, digits, - _ . only"
            )));
        }
        let mounts = self.call("GET", "sys/mounts", None).await?;
        let has = |m: &str| mounts.get(format!("{m}/")).is_some();
        if !has("pki_root") {
            self.call(
                "POST",
                "sys/mounts/pki_root",
                Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
            )
            .await?;
        }
        if self.ca_of("pki_root").await?.is_empty() {
            self.call(
                "POST",
                "pki_root/root/generate/internal",
                Some(json!({"common_name": "Edge Cloud root CA", "ttl": "87600h", "key_type": "ec", "key_bits": 256})),
            )
            .await?;
        }
        let m = mount(region);
        if !has(&m) {
            self.call(
                "POST",
                &format!("sys/mounts/{m}"),
                Some(json!({"type": "pki", "config": {"max_lease_ttl": "43800h"}})),
            )
            .await?;
        }
        if self.ca_of(&m).await?.is_empty() {
            let csr = self
                .call(
                    "POST",
                    &format!("{m}/intermediate/generate/internal"),
                    Some(json!({"common_name": format!("Edge Cloud region {region} CA"), "key_type": "ec", "key_bits": 256})),
                )
                .await?;
            let signed = self
                .call(
                    "POST",
                    "pki_root/root/sign-intermediate",
                    Some(json!({"csr": csr["csr"], "format": "pem_bundle", "ttl": "43800h"})),
                )
                .await?;
            self.call(
                "POST",
                &format!("{m}/intermediate/set-signed"),
                Some(json!({"certificate": signed["certificate"]})),
            )
            .await?;
        }
        for role in ROLES {
            let uris = if role.per_cloudlet() {
                format!("edge://{region}/{}/*", role.as_str())
            } else {
                format!("edge://{region}/{}", role.as_str())
            };
            self.call(
                "POST",
                &format!("{m}/roles/{}", role.as_str()),
                Some(json!({
                    "allow_any_name": true, "enforce_hostnames": false, "require_cn": false,
                    "allow_ip_sans": true, "allowed_uri_sans": uris, "use_csr_sans": false,
                    "use_csr_common_name": false, "server_flag": true, "client_flag": true,
                    "key_type": "ec", "key_bits": 256, "max_ttl": role.max_ttl(), "no_store": true,
                })),
            )
            .await?;
        }
        Ok(())
    }

    async fn ca_of(&self, mount: &str) -> Result<String, PkiError> {
        match self.call("GET", &format!("{mount}/cert/ca"), None).await {
            Ok(v) => Ok(v["certificate"].as_str().unwrap_or_default().to_string()),
            // A mount without a CA answers 400/404 on some versions.
            Err(PkiError::Vault { message, .. })
                if message.starts_with("400") || message.starts_with("404") =>
            {
                Ok(String::new())
            }
            Err(e) => Err(e),
        }
    }

    /// The region's CA certificate (PEM): what its components trust.
    pub async fn region_ca(&self, region: &str) -> Result<String, PkiError> {
        let ca = self.ca_of(&mount(region)).await?;
        if ca.is_empty() {
            return Err(PkiError::Invalid(format!(
                "region {region} has no CA in Vault: run `edgectl pki setup --region {region}`"
            )));
        }
        Ok(ca)
    }

    /// Issues a certificate and key for `peer` (Vault generates the key), valid `ttl`, with extra DNS and
    /// IP names for servers.
    pub async fn issue(
        &self,
        peer: &Peer,
        dns: &[&str],
        ips: &[&str],
        ttl: Duration,
    ) -> Result<CertBundle, PkiError> {
        let v = self
            .call(
                "POST",
                &format!("{}/issue/{}", mount(&peer.region), peer.role.as_str()),
                Some(json!({
                    "uri_sans": peer.uri(), "alt_names": dns.join(","), "ip_sans": ips.join(","),
                    "ttl": format!("{}s", ttl.as_secs().max(1)), "format": "pem",
                })),
            )
            .await?;
        bundle(&v, v["private_key"].as_str().unwrap_or_default())
    }

    /// Signs `csr` (PEM) for `peer`, valid `ttl`; the bundle's key is left empty (the requester has it).
    pub async fn sign(
        &self,
        peer: &Peer,
        csr: &str,
        ttl: Duration,
    ) -> Result<CertBundle, PkiError> {
        let v = self
            .call(
                "POST",
                &format!("{}/sign/{}", mount(&peer.region), peer.role.as_str()),
                Some(json!({
                    "csr": csr, "uri_sans": peer.uri(), "ttl": format!("{}s", ttl.as_secs().max(1)),
                    "format": "pem",
                })),
            )
            .await?;
        bundle(&v, "")
    }
}

fn bundle(v: &Value, key: &str) -> Result<CertBundle, PkiError> {
    let s = |f: &str| v[f].as_str().unwrap_or_default().to_string();
    let (cert, ca) = (s("certificate"), s("issuing_ca"));
    if cert.is_empty() {
        return Err(PkiError::Invalid(format!(
            "Vault returned no certificate: {v}"
        )));
    }
    Ok(CertBundle {
        chain: format!("{}\n{}\n", cert.trim(), ca.trim()),
        key: key.to_string(),
        ca,
        expires_at: v["expiration"].as_i64().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_junk_is_refused() {
        let crm = Peer {
            region: "EU".into(),
            role: Role::Crm,
            cloudlet: Some(("tmus".into(), "berlin".into(), "0a1b".into())),
        };
        assert_eq!(crm.uri(), "edge://EU/crm/tmus/berlin/0a1b");
        assert_eq!(Peer::parse(&crm.uri()), Some(crm));
        let dme = Peer {
            region: "EU".into(),
            role: Role::Dme,
            cloudlet: None,
        };
        assert_eq!(Peer::parse("edge://EU/dme"), Some(dme));
        for junk in [
            "edge://EU/dme/x/y/z",
            "edge://EU/crm",
            "edge://EU/root",
            "https://EU/mc",
            "",
        ] {
            assert_eq!(Peer::parse(junk), None, "{junk}");
        }
    }
}
