//! The audit log: the caller's own calls, and an organization's.

use super::*;

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    org: String,
    /// RFC 3339; default: 48 h before `endtime`
    #[serde(default)]
    starttime: Option<String>,
    /// RFC 3339; default: now
    #[serde(default)]
    endtime: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// One audit entry as shown: times in microseconds, as MobiledgeX showed them.
#[derive(Serialize, sqlx::FromRow)]
pub(crate) struct AuditRow {
    operationname: String,
    username: String,
    org: String,
    region: String,
    clientip: String,
    status: i32,
    starttime: i64,
    duration: i64,
    request: Option<Value>,
    response: String,
}

pub(crate) async fn audit_show(
    mc: &Mc,
    q: &AuditQuery,
    user: Option<&str>,
    org: Option<&str>,
) -> Result<HttpResponse> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT operation AS operationname, username, org, region, client_ip AS clientip, status,
                (extract(epoch FROM start_time) * 1000000)::int8 AS starttime, duration_ms * 1000 AS duration,
                request, response
         FROM audit
         WHERE ($1::text IS NULL OR username = $1) AND ($2::text IS NULL OR org = $2)
           AND start_time <= coalesce($4::timestamptz, now())
           AND start_time >= coalesce($3::timestamptz, coalesce($4::timestamptz, now()) - interval '48 hours')
         ORDER BY start_time DESC, id DESC LIMIT $5",
    )
    .bind(user)
    .bind(org)
    .bind(q.starttime.as_deref())
    .bind(q.endtime.as_deref())
    .bind(q.limit.unwrap_or(100).clamp(1, 10_000))
    .fetch_all(&mc.db)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("22007" | "22008")) => {
            ApiError::bad_request(format!("invalid starttime or endtime (RFC 3339 expected): {}", d.message()))
        }
        other => other.into(),
    })?;
    Ok(HttpResponse::Ok().json(rows))
}

pub(crate) async fn audit_self(
    mc: web::Data<Mc>,
    c: Caller,
    q: Option<Json<AuditQuery>>,
) -> Result<HttpResponse> {
    audit_show(
        &mc,
        &q.map(|q| q.0).unwrap_or_default(),
        Some(&c.username),
        None,
    )
    .await
}

pub(crate) async fn audit_org(
    mc: web::Data<Mc>,
    c: Caller,
    q: Json<AuditQuery>,
) -> Result<HttpResponse> {
    if q.org.is_empty() {
        require(&c, rbac::USERS, rbac::VIEW, "")?;
        return audit_show(&mc, &q, None, None).await;
    }
    require(&c, rbac::USERS, rbac::VIEW, &q.org)?;
    audit_show(&mc, &q, None, Some(&q.org)).await
}
