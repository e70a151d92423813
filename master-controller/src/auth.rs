//! Passwords (argon2), session tokens (JWTs that expire, signed with a key kept in Vault), API keys,
//! and failed-login throttling per user and per client address.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Argon2, Params, Version};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// MobiledgeX's length rule for passwords (checked before anything is looked up).
pub fn check_password_length(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < 8 {
        return Err(ApiError::bad_request(
            "Invalid password, password must be at least 8 characters",
        ));
    }
    if n >= 4096 {
        return Err(ApiError::bad_request(
            "Invalid password, password must be less than 4096 characters",
        ));
    }
    Ok(())
}

/// The strength rule, checked last as MobiledgeX checked its crack-time estimate: three kinds of
/// characters (lowercase, uppercase, digits, symbols) and not the user name.
pub fn check_password_strength(username: &str, password: &str) -> Result<(), ApiError> {
    let classes = [
        password.chars().any(|c| c.is_ascii_lowercase()),
        password.chars().any(|c| c.is_ascii_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let has_name =
        !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase());
    if classes < 3 || has_name {
        return Err(ApiError::bad_request(
            "Password too weak, requires three of lowercase letters, uppercase letters, digits and symbols, and not the user name. Please increase length or complexity",
        ));
    }
    Ok(())
}

/// Both password rules.
pub fn check_password(username: &str, password: &str) -> Result<(), ApiError> {
    check_password_length(password)?;
    check_password_strength(username, password)
}

thread_local! {
    /// The working memory of this thread's argon2 runs (19 MiB at the default parameters), used again by
    /// every run instead of allocated and freed each time.
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The raw argon2 output of `secret` and `salt` into `out`, in this thread's working memory.
fn argon2_raw(
    params: &Params,
    alg: argon2::Algorithm,
    version: Version,
    secret: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> bool {
    let argon = Argon2::new(alg, version, params.clone());
    MEMORY.with_borrow_mut(|m| {
        let n = params.block_count();
        if m.len() < n {
            m.resize(n, argon2::Block::default());
        }
        argon
            .hash_password_into_with_memory(secret, salt, out, &mut m[..n])
            .is_ok()
    })
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of `secret` with a fresh salt.
pub fn hash(secret: &str) -> String {
    let params = Params::default();
    let (alg, version) = (argon2::Algorithm::default(), Version::default());
    let salt = edge_common::vault::random_bytes(16);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    assert!(
        argon2_raw(&params, alg, version, secret.as_bytes(), &salt, &mut out),
        "argon2 hashing cannot fail with the default parameters"
    );
    PasswordHash {
        algorithm: alg.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params).expect("default parameters encode"),
        salt: Some(Salt::new(&salt).expect("a 16-byte salt")),
        hash: Some(Output::new(&out).expect("a 32-byte output")),
    }
    .to_string()
}

/// Whether `secret` matches the PHC string `hash` (compared in constant time).
pub fn verify(secret: &str, hash: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&h.salt, &h.hash) else {
        return false;
    };
    let (Ok(alg), Ok(params)) = (
        argon2::Algorithm::try_from(h.algorithm.as_str()),
        Params::try_from(&h),
    ) else {
        return false;
    };
    let Ok(version) = h.version.map_or(Ok(Version::default()), Version::try_from) else {
        return false;
    };
    let mut out = vec![0u8; expected.as_bytes().len()];
    argon2_raw(&params, alg, version, secret.as_bytes(), salt, &mut out)
        && Output::new(&out).is_ok_and(|o| o == *expected)
}

/// Argon2 runs on a few threads of its own (one per core), never on the async workers, each with its own
/// working memory ([`MEMORY`]). Each run takes tens of milliseconds of CPU and 19 MiB of memory (the default
/// parameters); allocated per run on tokio's blocking pool, a burst of logins left each thread's freed
/// 19 MiB in its own allocator arena: 300 logins took the MC from 69 MiB to 556 MiB.
type Job = Box<dyn FnOnce() + Send>;

static HASHERS: std::sync::LazyLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
    std::sync::LazyLock::new(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for n in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().expect("hasher queue").recv();
                        match job {
                            // A job that panics loses its answer (its caller sees None), not the thread.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("starting an argon2 thread");
        }
        std::sync::Mutex::new(tx)
    });

/// Runs `f` (an argon2 computation) on the argon2 threads and waits for it without blocking.
async fn argon2_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    HASHERS.lock().ok()?.send(job).ok()?;
    rx.await.ok()
}

/// [`hash`] on a blocking thread.
pub async fn hash_async(secret: &str) -> String {
    let secret = secret.to_string();
    argon2_blocking(move || hash(&secret))
        .await
        .expect("argon2 hashing does not panic")
}

/// [`verify`] on a blocking thread.
pub async fn verify_async(secret: &str, hash: &str) -> bool {
    let (secret, hash) = (secret.to_string(), hash.to_string());
    argon2_blocking(move || verify(&secret, &hash))
        .await
        .unwrap_or(false)
}

/// Claims of an MC session token (MobiledgeX's: HS512, `kid` in the payload). For an API-key session
/// `username` holds the key id and `apikeyusername` the user, as in MobiledgeX. `uid` and `gen` tie the
/// token to one account and one generation of its credentials: a re-created user has another `uid`, and a
/// password change, lock or unlock raises the stored generation, which ends every older token.
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
    #[serde(default)]
    pub uid: i64,
    #[serde(default, rename = "gen")]
    pub token_gen: i64,
}

/// The account a token is issued to.
pub struct Account<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub id: i64,
    pub token_gen: i64,
}

pub struct Tokens {
    key: Vec<u8>,
    pub ttl: Duration,
}

impl Tokens {
    pub fn new(key: Vec<u8>, ttl: Duration) -> Self {
        Self { key, ttl }
    }

    /// A token for `user`; with `apikeyid`, a 4 h API-key session of that user.
    pub fn issue(&self, user: &Account, apikeyid: &str) -> String {
        let now = edge_common::now_ms() / 1000;
        let (subject, authtype, ttl, keyuser) = if apikeyid.is_empty() {
            (user.name, "passwordauth", self.ttl, "")
        } else {
            (
                apikeyid,
                "apikeyauth",
                self.ttl.min(Duration::from_secs(4 * 3600)),
                user.name,
            )
        };
        let claims = Claims {
            username: subject.into(),
            email: user.email.into(),
            iat: now,
            exp: now + ttl.as_secs() as i64,
            kid: 1,
            authtype: authtype.into(),
            apikeyusername: keyuser.into(),
            uid: user.id,
            token_gen: user.token_gen,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(&self.key),
        )
        .expect("HS512 signing cannot fail")
    }

    /// The token's claims. As MobiledgeX's MC: an expired token (its signature good) is a 400 with jwt-go's
    /// text, `Token is expired by 1h2m3s`; anything else wrong is a 401 `Invalid or expired jwt`.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = || ApiError::unauthorized("Invalid or expired jwt");
        let mut v = Validation::new(Algorithm::HS512);
        v.validate_exp = false;
        let claims =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.key), &v)
                .map_err(|_| invalid())?
                .claims;
        let times = edge_common::go_jwt::parse_unverified(token).map_err(|_| invalid())?;
        match edge_common::go_jwt::check_times(&times.claims, edge_common::now_ms() / 1000) {
            Ok(()) => Ok(claims),
            Err(e) if e.starts_with("token is expired") => {
                Err(ApiError::bad_request(format!("T{}", &e[1..])))
            }
            Err(_) => Err(invalid()),
        }
    }
}

/// Failed-attempt counters: per account (`user:<name>`, the same key whether the caller typed the name or
/// the email), per API key id, and per client address (`ip:<addr>`, four times the limit, since many users
/// may share an address). Each attempt is counted *before* the password is checked, in the same critical
/// section as the check, so parallel guesses cannot slip past the limit; a success takes back only its own
/// attempt and clears its own account, never the address. Memory is bounded: at most `capacity` keys, the
/// stalest dropped first.
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    pub max_failures: usize,
    pub window: Duration,
    capacity: usize,
}

/// One counted attempt; give it back with [`Throttle::succeeded`].
#[derive(Debug)]
pub struct Attempt {
    keys: Vec<String>,
    at: Instant,
}

impl Throttle {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        Self {
            failures: Mutex::default(),
            max_failures,
            window,
            capacity: 100_000,
        }
    }

    fn limit(&self, key: &str) -> usize {
        if key.starts_with("ip:") {
            self.max_failures.saturating_mul(4)
        } else {
            self.max_failures
        }
    }

    /// Counts an attempt against every key, or fails with 429 (counting nothing) while one is locked out.
    pub fn attempt(&self, keys: &[String]) -> Result<Attempt, ApiError> {
        self.attempt_limited(keys, |k| self.limit(k))
    }

    /// [`attempt`](Self::attempt) with the limit per key given by `limit`.
    pub fn attempt_limited(
        &self,
        keys: &[String],
        limit: impl Fn(&str) -> usize,
    ) -> Result<Attempt, ApiError> {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("throttle lock");
        for k in keys {
            if let Some(times) = f.get_mut(k) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    times.pop_front();
                }
                if times.len() >= limit(k) {
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
        if f.len() + keys.len() > self.capacity {
            f.retain(|_, t| {
                t.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
            while f.len() + keys.len() > self.capacity {
                let stalest = f
                    .iter()
                    .min_by_key(|(_, t)| t.back().copied())
                    .map(|(k, _)| k.clone());
                match stalest {
                    Some(k) => f.remove(&k),
                    None => break,
                };
            }
        }
        for k in keys {
            f.entry(k.clone()).or_default().push_back(now);
        }
        Ok(Attempt {
            keys: keys.to_vec(),
            at: now,
        })
    }

    /// The attempt succeeded: it is taken back, and the account key (`keys[0]`) is cleared; other keys
    /// (the client address) keep their earlier failures.
    pub fn succeeded(&self, a: Attempt) {
        let mut f = self.failures.lock().expect("throttle lock");
        for (i, k) in a.keys.iter().enumerate() {
            if i == 0 {
                f.remove(k);
            } else if let Some(times) = f.get_mut(k)
                && let Some(pos) = times.iter().rposition(|t| *t == a.at)
            {
                times.remove(pos);
            }
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
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        // Hashes stored by the argon2 crate's own hasher (before the working memory was reused) verify.
        use argon2::password_hash::PasswordHasher;
        let stored = Argon2::default()
            .hash_password_with_salt(b"Correct-Horse-9", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(verify("Correct-Horse-9", &stored) && !verify("Correct-Horse-8", &stored));
        assert!(
            !verify("x", "not a PHC string")
                && !verify("x", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ")
        );
        let t = Tokens::new(b"k".to_vec(), Duration::from_secs(60));
        let user = Account {
            name: "alice",
            email: "a@x",
            id: 7,
            token_gen: 2,
        };
        let claims = t.verify(&t.issue(&user, "")).unwrap();
        assert_eq!(
            (claims.username.as_str(), claims.uid, claims.token_gen),
            ("alice", 7, 2)
        );
        assert_eq!(
            t.verify("junk").unwrap_err().message,
            "Invalid or expired jwt"
        );
    }

    #[test]
    fn throttle_counts_before_checking_and_success_keeps_the_address() {
        let th = Throttle::new(2, Duration::from_secs(60));
        let victim = ["user:victim".to_string(), "ip:1".to_string()];
        let own = ["user:me".to_string(), "ip:1".to_string()];
        // Two attempts are counted before either is judged: a third is refused at once.
        let _a = th.attempt(&victim).unwrap();
        let _b = th.attempt(&victim).unwrap();
        assert_eq!(th.attempt(&victim).unwrap_err().status, 429);
        // Logging into one's own account neither clears the victim's counter nor the address's.
        for _ in 0..6 {
            let ok = th.attempt(&own).unwrap();
            th.succeeded(ok);
        }
        assert_eq!(th.attempt(&victim).unwrap_err().status, 429);
        let f = th.failures.lock().unwrap();
        assert_eq!(f["ip:1"].len(), 2, "only the two failures count");
    }

    #[test]
    fn throttle_memory_is_bounded() {
        let mut th = Throttle::new(3, Duration::from_secs(60));
        th.capacity = 100;
        for i in 0..1000 {
            th.attempt(&[format!("user:u{i}"), format!("ip:{i}")])
                .unwrap();
        }
        assert!(th.failures.lock().unwrap().len() <= 100);
    }
}
