//! Cloudlet access keys: an ed25519 key pair per cloudlet. The controller keeps the public half on the
//! Cloudlet; the operator gets the private half once and hands it to the cloudlet's CRM, which signs its
//! notify hello with it.
//!
//! The signed message is `<region>/<organization>/<name>/<signed_at>` with `signed_at` in unix ms; the
//! controller accepts a signature within [`MAX_SKEW_MS`] of its own clock.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// How far a hello's `signed_at` may be from the controller's clock.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessKeyError {
    #[error("access key is not valid base64 PKCS#8 ed25519")]
    BadPrivateKey,
    #[error("stored public key of the cloudlet is not valid")]
    BadPublicKey,
    #[error("signature does not match the cloudlet's access key")]
    BadSignature,
    #[error(
        "signature time is {0} ms away from the controller's clock (allowed: {MAX_SKEW_MS} ms)"
    )]
    Skew(i64),
    #[error("generating a key pair failed")]
    Generate,
}

/// A new key pair: `(private PKCS#8 base64, public base64)`.
pub fn generate() -> Result<(String, String), AccessKeyError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| AccessKeyError::Generate)?;
    let private = B64.encode(pkcs8.as_ref());
    let public = public_of(&private)?;
    Ok((private, public))
}

fn key_pair(private: &str) -> Result<Ed25519KeyPair, AccessKeyError> {
    let der = B64
        .decode(private.trim())
        .map_err(|_| AccessKeyError::BadPrivateKey)?;
    Ed25519KeyPair::from_pkcs8(&der).map_err(|_| AccessKeyError::BadPrivateKey)
}

/// The public half (base64) of a private key.
pub fn public_of(private: &str) -> Result<String, AccessKeyError> {
    Ok(B64.encode(key_pair(private)?.public_key().as_ref()))
}

fn message(region: &str, organization: &str, name: &str, signed_at: i64) -> String {
    format!("{region}/{organization}/{name}/{signed_at}")
}

/// Signs a hello for the cloudlet `organization/name` in `region` at `signed_at` (unix ms).
pub fn sign(
    private: &str,
    region: &str,
    organization: &str,
    name: &str,
    signed_at: i64,
) -> Result<Vec<u8>, AccessKeyError> {
    sign_message(private, &message(region, organization, name, signed_at))
}

fn sign_message(private: &str, message: &str) -> Result<Vec<u8>, AccessKeyError> {
    Ok(key_pair(private)?
        .sign(message.as_bytes())
        .as_ref()
        .to_vec())
}

fn verify_message(public: &str, message: &str, signature: &[u8]) -> Result<(), AccessKeyError> {
    let public = B64
        .decode(public)
        .map_err(|_| AccessKeyError::BadPublicKey)?;
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message.as_bytes(), signature)
        .map_err(|_| AccessKeyError::BadSignature)
}

/// Checks a hello signature against the cloudlet's public key and the controller's clock `now` (unix ms).
pub fn verify(
    public: &str,
    region: &str,
    organization: &str,
    name: &str,
    signed_at: i64,
    signature: &[u8],
    now: i64,
) -> Result<(), AccessKeyError> {
    let skew = (now - signed_at).abs();
    if skew > MAX_SKEW_MS {
        return Err(AccessKeyError::Skew(skew));
    }
    verify_message(
        public,
        &message(region, organization, name, signed_at),
        signature,
    )
}

fn csr_message(
    region: &str,
    cloudlet: &edge_proto::edge::CloudletKey,
    client_type: edge_proto::edge::ClientType,
    csr: &str,
) -> String {
    format!(
        "cert/{region}/{}/{}/{}/{csr}",
        cloudlet.organization,
        cloudlet.name,
        client_type.as_str_name()
    )
}

/// Signs a certificate request of the cloudlet's CRM or Shepherd: the signature covers the CSR itself,
/// so it cannot be replayed for another key.
pub fn sign_csr(
    private: &str,
    region: &str,
    cloudlet: &edge_proto::edge::CloudletKey,
    client_type: edge_proto::edge::ClientType,
    csr: &str,
) -> Result<Vec<u8>, AccessKeyError> {
    sign_message(private, &csr_message(region, cloudlet, client_type, csr))
}

/// Checks a certificate request's signature against the cloudlet's public key.
pub fn verify_csr(
    public: &str,
    region: &str,
    cloudlet: &edge_proto::edge::CloudletKey,
    client_type: edge_proto::edge::ClientType,
    csr: &str,
    signature: &[u8],
) -> Result<(), AccessKeyError> {
    verify_message(
        public,
        &csr_message(region, cloudlet, client_type, csr),
        signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let (private, public) = generate().unwrap();
        let sig = sign(&private, "EU", "tmus", "berlin", 1_000).unwrap();
        assert_eq!(
            verify(&public, "EU", "tmus", "berlin", 1_000, &sig, 2_000),
            Ok(())
        );
        // Another cloudlet, another key, or an old signature are refused.
        assert_eq!(
            verify(&public, "EU", "tmus", "paris", 1_000, &sig, 2_000),
            Err(AccessKeyError::BadSignature)
        );
        let (_, other_public) = generate().unwrap();
        assert_eq!(
            verify(&other_public, "EU", "tmus", "berlin", 1_000, &sig, 2_000),
            Err(AccessKeyError::BadSignature)
        );
        assert!(matches!(
            verify(
                &public,
                "EU",
                "tmus",
                "berlin",
                1_000,
                &sig,
                1_000 + MAX_SKEW_MS + 1
            ),
            Err(AccessKeyError::Skew(_))
        ));
        assert_eq!(
            sign("not a key", "EU", "a", "b", 0),
            Err(AccessKeyError::BadPrivateKey)
        );
    }

    #[test]
    fn csr_signatures_bind_the_csr_and_the_cloudlet() {
        use edge_proto::edge::{ClientType, CloudletKey};
        let (private, public) = generate().unwrap();
        let berlin = CloudletKey {
            organization: "tmus".into(),
            name: "berlin".into(),
        };
        let sig = sign_csr(&private, "EU", &berlin, ClientType::Crm, "CSR-1").unwrap();
        assert_eq!(
            verify_csr(&public, "EU", &berlin, ClientType::Crm, "CSR-1", &sig),
            Ok(())
        );
        let paris = CloudletKey {
            name: "paris".into(),
            ..berlin.clone()
        };
        for (key, t, csr) in [
            (&berlin, ClientType::Crm, "CSR-2"),
            (&paris, ClientType::Crm, "CSR-1"),
            (&berlin, ClientType::Shepherd, "CSR-1"),
        ] {
            assert_eq!(
                verify_csr(&public, "EU", key, t, csr, &sig),
                Err(AccessKeyError::BadSignature)
            );
        }
    }
}
