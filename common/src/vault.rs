//! Secrets in Vault/OpenBao (KV v2): the one place components keep signing keys and passwords.

use std::collections::HashMap;

use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// A KV v2 mount of a Vault (or OpenBao) server.
pub struct Kv {
    client: VaultClient,
    mount: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Vault at {addr}: {message}")]
    Client { addr: String, message: String },
    #[error("secret {path} field {field} in Vault is not hex")]
    NotHex { path: String, field: String },
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading /dev/urandom");
    b
}

impl Kv {
    pub fn new(addr: &str, token: &str, mount: &str) -> Result<Self, VaultError> {
        let err = |e: ClientError| VaultError::Client {
            addr: addr.to_string(),
            message: e.to_string(),
        };
        let settings = VaultClientSettingsBuilder::default()
            .address(addr)
            .token(token)
            .build()
            .map_err(|e| VaultError::Client {
                addr: addr.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            client: VaultClient::new(settings).map_err(err)?,
            mount: mount.to_string(),
        })
    }

    fn err(&self, path: &str, e: ClientError) -> VaultError {
        VaultError::Client {
            addr: self.client.settings.address.to_string(),
            message: format!("{path}: {e}"),
        }
    }

    /// The string `field` of secret `path`, if present.
    pub async fn read(&self, path: &str, field: &str) -> Result<Option<String>, VaultError> {
        match vaultrs::kv2::read::<HashMap<String, String>>(&self.client, &self.mount, path).await {
            Ok(mut m) => Ok(m.remove(field)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// Writes secret `path` with one `field`.
    pub async fn write(&self, path: &str, field: &str, value: &str) -> Result<(), VaultError> {
        let data = HashMap::from([(field.to_string(), value.to_string())]);
        vaultrs::kv2::set(&self.client, &self.mount, path, &data)
            .await
            .map(|_| ())
            .map_err(|e| self.err(path, e))
    }

    /// Every field of secret `path` (`None` when it does not exist).
    pub async fn read_all(
        &self,
        path: &str,
    ) -> Result<Option<HashMap<String, String>>, VaultError> {
        match vaultrs::kv2::read::<HashMap<String, String>>(&self.client, &self.mount, path).await {
            Ok(m) => Ok(Some(m)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// Writes secret `path` with every field of `data`.
    pub async fn write_all(
        &self,
        path: &str,
        data: &HashMap<String, String>,
    ) -> Result<(), VaultError> {
        vaultrs::kv2::set(&self.client, &self.mount, path, data)
            .await
            .map(|_| ())
            .map_err(|e| self.err(path, e))
    }

    /// Deletes secret `path` with all its versions (nothing when absent).
    pub async fn delete(&self, path: &str) -> Result<(), VaultError> {
        match vaultrs::kv2::delete_metadata(&self.client, &self.mount, path).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// A random `len`-byte key kept hex-encoded in `path`/`field`, created when absent.
    pub async fn key(&self, path: &str, field: &str, len: usize) -> Result<Vec<u8>, VaultError> {
        if let Some(s) = self.read(path, field).await? {
            return (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| VaultError::NotHex {
                    path: path.into(),
                    field: field.into(),
                });
        }
        let key = random_bytes(len);
        self.write(path, field, &hex(&key)).await?;
        tracing::info!(path, "created a key in Vault");
        Ok(key)
    }
}
