//! Session and edge-events cookies: HS512 JWTs signed with the region's DME secret, with MobiledgeX's
//! claim layout (`exp`, `iat`, and the identity under `key`). The secret comes from Vault/OpenBao when
//! configured (so every DME of a region accepts every other's cookies), else it is random per process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use edge_common::go_jwt;
use edge_proto::dme::{Loc, Timestamp};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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

/// Which instance an edge-events cookie is for, and where the client was (MobiledgeX's claims, plus the
/// instance's key).
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
    pub location: CookieLoc,
    #[serde(skip_serializing_if = "zero")]
    pub kid: i64,
}

fn unset(x: &f64) -> bool {
    *x == 0.0
}

/// The client's location as MobiledgeX's `dme.Loc` JSON (every field omitted when zero).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CookieLoc {
    #[serde(skip_serializing_if = "unset")]
    pub latitude: f64,
    #[serde(skip_serializing_if = "unset")]
    pub longitude: f64,
    #[serde(skip_serializing_if = "unset")]
    pub horizontal_accuracy: f64,
    #[serde(skip_serializing_if = "unset")]
    pub vertical_accuracy: f64,
    #[serde(skip_serializing_if = "unset")]
    pub altitude: f64,
    #[serde(skip_serializing_if = "unset")]
    pub course: f64,
    #[serde(skip_serializing_if = "unset")]
    pub speed: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<CookieTime>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CookieTime {
    pub seconds: i64,
    pub nanos: i32,
}

impl From<&Loc> for CookieLoc {
    fn from(l: &Loc) -> Self {
        Self {
            latitude: l.latitude,
            longitude: l.longitude,
            horizontal_accuracy: l.horizontal_accuracy,
            vertical_accuracy: l.vertical_accuracy,
            altitude: l.altitude,
            course: l.course,
            speed: l.speed,
            timestamp: l.timestamp.as_ref().map(|t| CookieTime {
                seconds: t.seconds,
                nanos: t.nanos,
            }),
        }
    }
}

impl From<&CookieLoc> for Loc {
    fn from(l: &CookieLoc) -> Self {
        Self {
            latitude: l.latitude,
            longitude: l.longitude,
            horizontal_accuracy: l.horizontal_accuracy,
            vertical_accuracy: l.vertical_accuracy,
            altitude: l.altitude,
            course: l.course,
            speed: l.speed,
            timestamp: l.timestamp.as_ref().map(|t| Timestamp {
                seconds: t.seconds,
                nanos: t.nanos,
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Claims<K> {
    #[serde(default)]
    exp: i64,
    #[serde(default)]
    iat: i64,
    key: K,
}

/// A token's claims as jwt-go reads them (for its time checks).
type Claimed = Map<String, Value>;

/// Session cookies kept once verified (a client sends the same one with every call): about 1 KB each.
const VERIFIED_SESSIONS: usize = 20_000;

pub struct Cookies {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub session_ttl: Duration,
    pub events_ttl: Duration,
    /// session cookies whose form and signature checked out, with their claims: their times are
    /// checked again on every use. Emptied when it holds `VERIFIED_SESSIONS`.
    sessions: Mutex<HashMap<String, (SessionKey, Claimed)>>,
}

impl Cookies {
    pub fn new(secret: Vec<u8>, session_ttl: Duration, events_ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            session_ttl,
            events_ttl,
            sessions: Mutex::default(),
        }
    }

    fn sign<K: Serialize>(&self, key: K, ttl: Duration) -> String {
        let now = edge_common::now_ms() / 1000;
        let claims = Claims {
            exp: now + ttl.as_secs() as i64,
            iat: now,
            key,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &self.encoding)
            .expect("HS512 signing cannot fail")
    }

    /// Checks `cookie` as MobiledgeX's DME does (jwt-go v3), failing with jwt-go's texts: the token's
    /// form first, then its signature, then its times.
    fn verify<K: for<'de> Deserialize<'de>>(&self, cookie: &str) -> Result<K, Status> {
        let (key, claims) = self.verify_signed(cookie)?;
        check_times(&claims)?;
        Ok(key)
    }

    /// The identity and claims of `cookie` once its form and signature check out (not its times).
    fn verify_signed<K: for<'de> Deserialize<'de>>(
        &self,
        cookie: &str,
    ) -> Result<(K, Claimed), Status> {
        if cookie.is_empty() {
            return Err(Status::unauthenticated(
                "VerifyCookie failed: missing cookie",
            ));
        }
        let unauthenticated = |m: String| Status::unauthenticated(m);
        let token = go_jwt::parse_unverified(cookie).map_err(unauthenticated)?;
        if token.claims.get("key").is_none_or(Value::is_null) {
            return Err(Status::unauthenticated(
                "VerifyCookie failed: Invalid cookie, no key",
            ));
        }
        if let Some(e) = go_jwt::method_error(&token.alg) {
            return Err(Status::unauthenticated(e));
        }
        let mut v = Validation::new(Algorithm::HS512);
        v.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let key = jsonwebtoken::decode::<Claims<K>>(cookie, &self.decoding, &v)
            .map_err(|e| {
                unauthenticated(match e.kind() {
                    ErrorKind::InvalidSignature => "signature is invalid".into(),
                    ErrorKind::InvalidAlgorithm => "key is of invalid type".into(),
                    ErrorKind::Base64(_) => "illegal base64 data at input byte 0".into(),
                    _ => e.to_string(),
                })
            })?
            .claims
            .key;
        Ok((key, token.claims))
    }

    pub fn session(&self, key: SessionKey) -> String {
        self.sign(key, self.session_ttl)
    }

    pub fn verify_session(&self, cookie: &str) -> Result<SessionKey, Status> {
        let check = |key: &SessionKey, claims: &Claimed| {
            check_times(claims)?;
            if key.orgname.is_empty() && key.appname.is_empty() {
                return Err(Status::unauthenticated(
                    "VerifyCookie failed: Invalid cookie, no key",
                ));
            }
            Ok(key.clone())
        };
        if let Some((key, claims)) = self.sessions.lock().expect("sessions lock").get(cookie) {
            return check(key, claims);
        }
        let (key, claims) = self.verify_signed::<SessionKey>(cookie)?;
        let checked = check(&key, &claims);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() >= VERIFIED_SESSIONS {
            sessions.clear();
        }
        sessions.insert(cookie.to_string(), (key, claims));
        checked
    }

    pub fn edge_events(&self, key: EdgeEventsKey) -> String {
        self.sign(key, self.events_ttl)
    }

    pub fn verify_edge_events(&self, cookie: &str) -> Result<EdgeEventsKey, Status> {
        let key: EdgeEventsKey = self.verify(cookie)?;
        if [
            &key.clusterorg,
            &key.clustername,
            &key.cloudletorg,
            &key.cloudletname,
        ]
        .iter()
        .all(|f| f.is_empty())
        {
            return Err(Status::unauthenticated("No Key data in cookie"));
        }
        let l = &key.location;
        if !(-90.0..=90.0).contains(&l.latitude) || !(-180.0..=180.0).contains(&l.longitude) {
            return Err(Status::unauthenticated("invalid location in cookie"));
        }
        Ok(key)
    }
}

/// jwt-go's checks of a token's times (expired, used before issued or before valid).
fn check_times(claims: &Claimed) -> Result<(), Status> {
    go_jwt::check_times(claims, edge_common::now_ms() / 1000).map_err(Status::unauthenticated)
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
        // An hour past its expiry (signed with the right secret): jwt-go's text with the duration.
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                exp: edge_common::now_ms() / 1000 - 3600,
                iat: 0,
                key: key.clone(),
            },
            &c.encoding,
        )
        .unwrap();
        // Asked again, from the verified cookies: still checked for its times.
        for _ in 0..2 {
            let err = c.verify_session(&old).unwrap_err();
            assert!(
                err.message().starts_with("token is expired by 1h0m"),
                "{}",
                err.message()
            );
        }
        assert_eq!(c.verify_session(&cookie).unwrap(), key);
        let no_key = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"exp": 1}),
            &c.encoding,
        )
        .unwrap();
        assert_eq!(
            c.verify_session(&no_key).unwrap_err().message(),
            "VerifyCookie failed: Invalid cookie, no key"
        );
    }
}
