//! The audit log: every login (failed or not) and every mutating call, with a redacted request.

use serde_json::Value;
use sqlx::PgPool;

/// Fields whose values never reach the audit log.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "passhash",
    "apikey",
    "token",
    "access_private_key",
    "auth_token",
    "session_cookie",
];

/// A copy of `v` with every secret field's value replaced by `"<redacted>"`.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let secret = SECRET_FIELDS.iter().any(|s| k.eq_ignore_ascii_case(s));
                    (
                        k.clone(),
                        if secret {
                            Value::String("<redacted>".into())
                        } else {
                            redact(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
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
    .bind(e.response)
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
    fn secrets_are_redacted_at_any_depth() {
        let v = serde_json::json!({"username": "a", "password": "p", "nested": [{"apikey": "k", "x": 1}]});
        let r = redact(&v);
        assert_eq!(r["password"], "<redacted>");
        assert_eq!(r["nested"][0]["apikey"], "<redacted>");
        assert_eq!(r["nested"][0]["x"], 1);
        assert_eq!(r["username"], "a");
    }
}
