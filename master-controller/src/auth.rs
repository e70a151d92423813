//! Passwords (argon2), session tokens (JWTs that expire, signed with a key kept in Vault), API keys,
//! and failed-login throttling per user and per client address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Checks a new password: 8 to 4096 characters, three of four character classes, not the user name.
pub fn check_password(username: &str, password: &str) -> Result<(), ApiError> {
    if password.chars().count() > 4096 {
        return Err(ApiError::bad_request(
            "Invalid password, password must be less than 4096 characters",
        ));
    }
    let classes = [
        password.chars().any(|c| c.is_ascii_lowercase()),
        password.chars().any(|c| c.is_ascii_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if password.chars().count() < 8 || classes < 3 {
        return Err(ApiError::bad_request(
            "Invalid password, password must be at least 8 characters and contain three of: lowercase letters, uppercase letters, digits, symbols",
        ));
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return Err(ApiError::bad_request(
            "Invalid password, password must not contain the user name",
        ));
    }
    Ok(())
}

pub fn hash(secret: &str) -> String {
    let salt = edge_common::vault::random_bytes(16);
    let hash: PasswordHash = Argon2::default()
        .hash_password_with_salt(secret.as_bytes(), &salt)
        .expect("argon2 hashing cannot fail");
    hash.to_string()
}

pub fn verify(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// Claims of an MC session token (MobiledgeX's: HS512, `kid` in the payload). For an API-key session
/// `username` holds the key id and `apikeyusername` the user, as in MobiledgeX.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub username: String,
    #[serde(default)]
    pub email: String,
    pub iat: i64,
    pub exp: i64,
    pub kid: i64,
    /// "passwordauth" or "apikeyauth"
    #[serde(default)]
    pub authtype: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub apikeyusername: String,
}

pub struct Tokens {
    key: Vec<u8>,
    pub ttl: Duration,
}

impl Tokens {
    pub fn new(key: Vec<u8>, ttl: Duration) -> Self {
        Self { key, ttl }
    }

    /// A token for `username`; with `apikeyid`, a 4 h API-key session of that user.
    pub fn issue(&self, username: &str, email: &str, apikeyid: &str) -> String {
        let now = edge_common::now_ms() / 1000;
        let (subject, authtype, ttl, keyuser) = if apikeyid.is_empty() {
            (username, "passwordauth", self.ttl, "")
        } else {
            (
                apikeyid,
                "apikeyauth",
                self.ttl.min(Duration::from_secs(4 * 3600)),
                username,
            )
        };
        let claims = Claims {
            username: subject.into(),
            email: email.into(),
            iat: now,
            exp: now + ttl.as_secs() as i64,
            kid: 1,
            authtype: authtype.into(),
            apikeyusername: keyuser.into(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(&self.key),
        )
        .expect("HS512 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut v = Validation::new(Algorithm::HS512);
        v.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.key), &v)
            .map(|d| d.claims)
            .map_err(|_| ApiError::unauthorized("Invalid or expired jwt"))
    }
}

/// Failed logins per user name (keys `user:<name>`, `apikey:<id>`) and per client address (`ip:<addr>`,
/// four times the limit); too many within the window lock that key out.
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    pub max_failures: usize,
    pub window: Duration,
}

impl Throttle {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        Self {
            failures: Mutex::default(),
            max_failures,
            window,
        }
    }

    /// Fails with 429 while any of `keys` is locked out.
    pub fn check(&self, keys: &[String]) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("throttle lock");
        for k in keys {
            if let Some(times) = f.get_mut(k) {
                times.retain(|t| now.duration_since(*t) < self.window);
                // A client address may be shared by many users (NAT): it gets more room than one user.
                let limit = if k.starts_with("ip:") {
                    self.max_failures * 4
                } else {
                    self.max_failures
                };
                if times.len() >= limit {
                    let wait = self
                        .window
                        .saturating_sub(now.duration_since(times[0]))
                        .as_secs()
                        .max(1);
                    return Err(ApiError::new(
                        actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "Login temporarily disabled due to {} failed login attempts, please try again in {wait}s",
                            times.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, keys: &[String]) {
        let mut f = self.failures.lock().expect("throttle lock");
        for k in keys {
            f.entry(k.clone()).or_default().push(Instant::now());
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut f = self.failures.lock().expect("throttle lock");
        for k in keys {
            f.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens() {
        assert!(check_password("alice", "short1A").is_err());
        assert!(check_password("alice", "alllowercase").is_err());
        assert!(check_password("alice", "Alice-is-1234").is_err());
        assert!(check_password("alice", "Correct-Horse-9").is_ok());
        let h = hash("Correct-Horse-9");
        assert!(verify("Correct-Horse-9", &h) && !verify("wrong", &h));
        let t = Tokens::new(b"k".to_vec(), Duration::from_secs(60));
        let tok = t.issue("alice", "a@x", "");
        assert_eq!(t.verify(&tok).unwrap().username, "alice");
        assert_eq!(
            t.verify("junk").unwrap_err().message,
            "Invalid or expired jwt"
        );
        let th = Throttle::new(2, Duration::from_secs(60));
        let keys = ["user:alice".to_string()];
        th.failed(&keys);
        assert!(th.check(&keys).is_ok());
        th.failed(&keys);
        assert_eq!(th.check(&keys).unwrap_err().status, 429);
        th.succeeded(&keys);
        assert!(th.check(&keys).is_ok());
    }
}
