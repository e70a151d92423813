//! The audit log: every login (failed or not) and every mutating call, with a redacted request.

use serde_json::Value;
use sqlx::PgPool;

/// A field whose name contains one of these (any case) never has its value stored: passwords, API keys,
/// tokens, private keys, and App env entries named like secrets (`DB_PASSWORD`, `API_TOKEN`).
const SECRET_PATTERNS: &[&str] = &["pass", "secret", "token", "private", "apikey"];

/// Stored requests larger than this (as JSON) are replaced by a note of their size.
pub const MAX_STORED_BYTES: usize = 16 * 1024;

fn is_secret(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    SECRET_PATTERNS.iter().any(|p| f.contains(p))
}

/// A copy of `v` fit to store: secret fields' values replaced by `"<redacted>"`, NUL characters (which
/// PostgreSQL's JSONB refuses) removed, and a body over [`MAX_STORED_BYTES`] replaced by its size.
pub fn redact(v: &Value) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = if is_secret(k) {
                            Value::String("<redacted>".into())
                        } else {
                            walk(v)
                        };
                        (k.replace('\0', ""), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(walk).collect()),
            Value::String(s) => Value::String(s.replace('\0', "")),
            other => other.clone(),
        }
    }
    let r = walk(v);
    let size = r.to_string().len();
    if size > MAX_STORED_BYTES {
        serde_json::json!({ "truncated": true, "bytes": size })
    } else {
        r
    }
}

/// One audit entry.
pub struct Entry<'a> {
    /// unix seconds (Postgres converts with `to_timestamp`; no date-time crate needed)
    pub start: f64,
    pub duration_ms: i64,
    pub username: &'a str,
    pub org: &'a str,
    pub region: &'a str,
    pub operation: &'a str,
    pub status: u16,
    pub client_ip: &'a str,
    pub request: Option<&'a Value>,
    pub response: &'a str,
}

/// Stores `e`; a failure is logged, never returned (auditing must not break the call it records).
pub async fn record(db: &PgPool, e: Entry<'_>) {
    let request = e.request.map(redact);
    let r = sqlx::query(
        "INSERT INTO audit (start_time, duration_ms, username, org, region, operation, status, client_ip, request, response)
         VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.start)
    .bind(e.duration_ms)
    .bind(e.username)
    .bind(e.org)
    .bind(e.region)
    .bind(e.operation)
    .bind(i32::from(e.status))
    .bind(e.client_ip)
    .bind(request)
    .bind(e.response.replace('\0', ""))
    .execute(db)
    .await;
    if let Err(err) = r {
        tracing::error!(error = %err, operation = e.operation, "writing the audit log failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_by_pattern_at_any_depth() {
        let v = serde_json::json!({"username": "a", "password": "p", "nested": [{"apikey": "k", "x": 1}],
            "App": {"env": {"DB_PASSWORD": "hunter2", "MODE": "prod", "client_secret": "s", "AccessPrivateKey": "k"}},
            "auth_token\u{0}": "t", "text": "nul\u{0}here"});
        let r = redact(&v);
        assert_eq!(r["password"], "<redacted>");
        assert_eq!(r["nested"][0]["apikey"], "<redacted>");
        assert_eq!(r["nested"][0]["x"], 1);
        assert_eq!(r["username"], "a");
        let env = &r["App"]["env"];
        assert_eq!(env["DB_PASSWORD"], "<redacted>");
        assert_eq!(env["client_secret"], "<redacted>");
        assert_eq!(env["AccessPrivateKey"], "<redacted>");
        assert_eq!(env["MODE"], "prod");
        assert_eq!(r["auth_token"], "<redacted>");
        assert_eq!(r["text"], "nulhere");
    }

    #[test]
    fn large_bodies_are_not_stored() {
        let v = serde_json::json!({"blob": "x".repeat(MAX_STORED_BYTES)});
        let r = redact(&v);
        assert_eq!(r["truncated"], true);
    }
}
