//! The master controller's REST API as edgectl uses it: log in, call, and follow streamed replies.
//!
//! Failures keep their kind, which sets edgectl's exit code ([`Failure::exit_code`]): the platform
//! rejected the request (a 4xx), an operation it accepted failed, or the MC could not be reached.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The MC refused the request (bad input, not allowed, not found, conflict): exit code 2.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The MC took the request but the operation failed (an error state, a failure after the stream
    /// started, a server error): exit code 3.
    #[error("failed: {0}")]
    Failed(String),
    /// The MC (or the region behind it) did not answer: exit code 4.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Rejected(_) => 2,
            Failure::Failed(_) => 3,
            Failure::Unreachable(_) => 4,
        }
    }

    fn from_status(status: u16, body: &str) -> Self {
        let msg = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or_else(|| body.trim().to_string());
        let msg = format!("{status}: {msg}");
        match status {
            502..=504 => Failure::Unreachable(msg),
            400..=499 => Failure::Rejected(msg),
            _ => Failure::Failed(msg),
        }
    }
}

#[derive(Clone)]
pub struct Mc {
    http: reqwest::Client,
    /// `https://host:port`, without `/api/v1`
    pub url: String,
    token: Option<String>,
}

impl Mc {
    /// A client of the MC at `url`, trusting `ca` (PEM) besides the system's roots.
    pub fn new(url: &str, ca: Option<&Path>, token: Option<String>) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("reading the MC's CA {}: {e}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Self {
            http: b.build()?,
            url: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Logs in and returns the token.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, Failure> {
        let v = self
            .post("/login", &json!({"username": user, "password": password}))
            .await?;
        v["token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Failure::Failed(format!("the login reply has no token: {v}")))
    }

    /// POSTs `body` to `/api/v1<path>`: the reply's JSON document (a streamed reply's `data` as an array).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let mut lines = Vec::new();
        let single = self.stream(path, body, |l| lines.push(l.clone())).await?;
        Ok(single.unwrap_or(Value::Array(lines)))
    }

    /// POSTs `body` and hands the `data` of each line of a streamed reply to `line` as it arrives; a
    /// reply that is one JSON document is returned instead. A `{"result": ...}` line (an error after the
    /// stream started) ends the call as [`Failure::Failed`].
    pub async fn stream(
        &self,
        path: &str,
        body: &Value,
        mut line: impl FnMut(&Value),
    ) -> Result<Option<Value>, Failure> {
        let unreachable = |e: reqwest::Error| {
            Failure::Unreachable(format!("the master controller at {}: {e}", self.url))
        };
        let mut r = self
            .http
            .post(format!("{}/api/v1{path}", self.url))
            .json(body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let mut r = r.send().await.map_err(unreachable)?;
        let status = r.status().as_u16();
        if status >= 300 {
            let text = r.text().await.unwrap_or_default();
            return Err(Failure::from_status(status, &text));
        }
        // Streamed replies are lines of `{"data": ...}` (or a last `{"result": ...}`); anything else is
        // the one document of a unary reply.
        let mut buf = Vec::new();
        let mut single = None;
        let mut handle = |raw: &[u8]| -> Result<(), Failure> {
            if raw.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let v = match serde_json::from_slice::<Value>(raw) {
                Ok(v) => v,
                Err(_) => Value::String(String::from_utf8_lossy(raw).trim().to_string()),
            };
            if let Some(res) = v.get("result") {
                let msg = res["message"].as_str().unwrap_or("the operation failed");
                return Err(Failure::Failed(msg.to_string()));
            }
            match v.get("data") {
                Some(d) => line(d),
                None => single = Some(v),
            }
            Ok(())
        };
        while let Some(chunk) = r.chunk().await.map_err(unreachable)? {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let l: Vec<u8> = buf.drain(..=i).collect();
                handle(&l)?;
            }
        }
        handle(&buf)?;
        Ok(single)
    }
}
