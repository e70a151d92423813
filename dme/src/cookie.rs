//! Session and edge-events cookies: HS512 JWTs signed with the region's DME secret, with MobiledgeX's
//! claim layout (`exp`, `iat`, and the identity under `key`). The secret comes from Vault/OpenBao when
//! configured (so every DME of a region accepts every other's cookies), else it is random per process.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use tonic::Status;

fn empty(s: &str) -> bool {
    s.is_empty()
}
fn zero(n: &i64) -> bool {
    *n == 0
}

/// Who a session cookie was issued to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionKey {
    #[serde(skip_serializing_if = "empty")]
    pub peerip: String,
    #[serde(skip_serializing_if = "empty")]
    pub orgname: String,
    #[serde(skip_serializing_if = "empty")]
    pub appname: String,
    #[serde(skip_serializing_if = "empty")]
    pub appvers: String,
    #[serde(skip_serializing_if = "empty")]
    pub uniqueidtype: String,
    #[serde(skip_serializing_if = "empty")]
    pub uniqueid: String,
    #[serde(skip_serializing_if = "zero")]
    pub kid: i64,
}

/// Which instance an edge-events cookie is for, and where the client was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeEventsKey {
    #[serde(skip_serializing_if = "empty")]
    pub appinstorg: String,
    #[serde(skip_serializing_if = "empty")]
    pub appinstname: String,
    #[serde(skip_serializing_if = "empty")]
    pub clusterorg: String,
    #[serde(skip_serializing_if = "empty")]
    pub clustername: String,
    #[serde(skip_serializing_if = "empty")]
    pub cloudletorg: String,
    #[serde(skip_serializing_if = "empty")]
    pub cloudletname: String,
    pub latitude: f64,
    pub longitude: f64,
    #[serde(skip_serializing_if = "zero")]
    pub kid: i64,
}

#[derive(Serialize, Deserialize)]
struct Claims<K> {
    exp: i64,
    iat: i64,
    key: K,
}

pub struct Cookies {
    secret: Vec<u8>,
    pub session_ttl: Duration,
    pub events_ttl: Duration,
}

impl Cookies {
    pub fn new(secret: Vec<u8>, session_ttl: Duration, events_ttl: Duration) -> Self {
        Self {
            secret,
            session_ttl,
            events_ttl,
        }
    }

    fn sign<K: Serialize>(&self, key: K, ttl: Duration) -> String {
        let now = edge_common::now_ms() / 1000;
        let claims = Claims {
            exp: now + ttl.as_secs() as i64,
            iat: now,
            key,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .expect("HS512 signing cannot fail")
    }

    fn verify<K: for<'de> Deserialize<'de>>(&self, cookie: &str) -> Result<K, Status> {
        if cookie.is_empty() {
            return Err(Status::unauthenticated(
                "VerifyCookie failed: missing cookie",
            ));
        }
        let mut v = Validation::new(Algorithm::HS512);
        v.leeway = 0;
        v.required_spec_claims = ["exp".to_string()].into();
        match jsonwebtoken::decode::<Claims<K>>(cookie, &DecodingKey::from_secret(&self.secret), &v)
        {
            Ok(d) => Ok(d.claims.key),
            Err(e) => Err(Status::unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "token is expired".to_string(),
                ErrorKind::InvalidSignature => "signature is invalid".to_string(),
                ErrorKind::InvalidToken => {
                    "token contains an invalid number of segments".to_string()
                }
                _ => format!("VerifyCookie failed: {e}"),
            })),
        }
    }

    pub fn session(&self, key: SessionKey) -> String {
        self.sign(key, self.session_ttl)
    }

    pub fn verify_session(&self, cookie: &str) -> Result<SessionKey, Status> {
        let key: SessionKey = self.verify(cookie)?;
        if key.orgname.is_empty() && key.appname.is_empty() {
            return Err(Status::unauthenticated(
                "VerifyCookie failed: Invalid cookie, no key",
            ));
        }
        Ok(key)
    }

    pub fn edge_events(&self, key: EdgeEventsKey) -> String {
        self.sign(key, self.events_ttl)
    }

    pub fn verify_edge_events(&self, cookie: &str) -> Result<EdgeEventsKey, Status> {
        let key: EdgeEventsKey = self.verify(cookie)?;
        if key.appinstname.is_empty() && key.cloudletname.is_empty() {
            return Err(Status::unauthenticated("No Key data in cookie"));
        }
        Ok(key)
    }
}

pub use edge_common::vault::random_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_round_trip_and_fail_clearly() {
        let c = Cookies::new(
            random_bytes(64),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let key = SessionKey {
            orgname: "acme".into(),
            appname: "game".into(),
            appvers: "1.0".into(),
            ..Default::default()
        };
        let cookie = c.session(key.clone());
        assert_eq!(c.verify_session(&cookie).unwrap(), key);
        assert_eq!(
            c.verify_session("").unwrap_err().message(),
            "VerifyCookie failed: missing cookie"
        );
        assert_eq!(
            c.verify_session("garbage").unwrap_err().message(),
            "token contains an invalid number of segments"
        );
        let other = Cookies::new(
            random_bytes(64),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        assert_eq!(
            other.verify_session(&cookie).unwrap_err().message(),
            "signature is invalid"
        );
        let expired = Cookies::new(c.secret.clone(), Duration::ZERO, Duration::ZERO);
        let old = expired.session(key);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            c.verify_session(&old).unwrap_err().message(),
            "token is expired"
        );
    }
}
