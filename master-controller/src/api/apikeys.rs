//! API keys: scoped credentials of a user in one organization.

use super::*;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub(crate) struct NewApiKey {
    #[serde(default, alias = "org")]
    #[serde(rename = "Org")]
    org: String,
    #[serde(default, alias = "description")]
    #[serde(rename = "Description")]
    description: String,
    #[serde(default)]
    permissions: Vec<Perm>,
}

pub(crate) async fn apikey_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<NewApiKey>,
) -> Result<HttpResponse> {
    let call = async {
        if c.api_key.is_some() {
            return Err(ApiError::forbidden_msg(
                "ApiKey auth not allowed to create API keys, please log in with user account",
            ));
        }
        if body.permissions.is_empty() {
            return Err(ApiError::bad_request("No permissions for specified org"));
        }
        // No role in the org: nothing to delegate there.
        let held = c
            .grants
            .0
            .get(&body.org)
            .ok_or_else(|| ApiError::forbidden_msg("Invalid org specified"))?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE username = $1")
            .bind(&c.username)
            .fetch_one(&mc.db)
            .await?;
        if count >= API_KEY_LIMIT {
            return Err(ApiError::bad_request(format!(
                "User cannot create more than {API_KEY_LIMIT} API keys, please delete existing keys to create new one"
            )));
        }
        let mut perms = Vec::new();
        for p in &body.permissions {
            if p.action != rbac::VIEW && p.action != rbac::MANAGE {
                return Err(ApiError::bad_request(format!(
                    "Invalid action {}: view or manage",
                    p.action
                )));
            }
            if !held.contains(&(p.resource.clone(), p.action.clone())) {
                let valid: Vec<String> = held.iter().map(|(r, a)| format!("{r}:{a}")).collect();
                return Err(ApiError::bad_request(format!(
                    "Invalid permission specified: [{}:{}], valid permissions (resource:action) are [{}]",
                    p.resource,
                    p.action,
                    valid.join(" ")
                )));
            }
            perms.push(p.clone());
            if p.action == rbac::MANAGE {
                perms.push(Perm {
                    resource: p.resource.clone(),
                    action: rbac::VIEW.into(),
                });
            }
        }
        let id = edge_common::vault::hex(&edge_common::vault::random_bytes(16));
        let key = edge_common::vault::hex(&edge_common::vault::random_bytes(24));
        let keyhash = auth::hash_async(&key).await;
        sqlx::query("INSERT INTO api_keys (id, username, org, permissions, keyhash, description) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(&c.username)
            .bind(&body.org)
            .bind(as_value(&perms))
            .bind(keyhash)
            .bind(&body.description)
            .execute(&mc.db)
            .await?;
        Ok(HttpResponse::Ok().json(
            json!({ "Id": id, "ApiKey": key, "Org": body.org, "Description": body.description }),
        ))
    };
    audited(&mc, &req, &c.username, &body.org, &as_value(&*body), call).await
}

/// API keys one user may hold (MobiledgeX's `UserApiKeyCreateLimit`).
pub(super) const API_KEY_LIMIT: i64 = 10;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyId {
    #[serde(default, rename = "Id", alias = "id")]
    id: String,
}

pub(crate) async fn apikey_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<KeyId>,
) -> Result<HttpResponse> {
    let call = async {
        no_api_key(&c, "delete API keys")?;
        if body.id.is_empty() {
            return Err(ApiError::bad_request("Missing API key ID"));
        }
        let owner: Option<(String, String)> =
            sqlx::query_as("SELECT username, org FROM api_keys WHERE id = $1")
                .bind(&body.id)
                .fetch_optional(&mc.db)
                .await?;
        let Some((owner, org)) = owner else {
            return Err(ApiError::not_found("API key ID not found"));
        };
        // The owner, the managers of the key's org, and admins.
        if owner != c.username && !c.grants.allows(rbac::USERS, rbac::MANAGE, &org) {
            return Err(ApiError::forbidden_msg(
                "Cannot delete other user's API key",
            ));
        }
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(&body.id)
            .execute(&mc.db)
            .await?;
        Ok(ok("Deleted API Key successfully"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

/// The caller's keys; managers also see every key of the orgs they manage, admins every key.
pub(crate) async fn apikey_show(mc: web::Data<Mc>, c: Caller) -> Result<HttpResponse> {
    let managed: Vec<String> = c
        .grants
        .0
        .keys()
        .filter(|o| c.grants.allows(rbac::USERS, rbac::MANAGE, o))
        .cloned()
        .collect();
    let rows: Vec<(String, String, String, String, Value)> = sqlx::query_as(
        "SELECT id, username, org, description, permissions FROM api_keys
         WHERE username = $1 OR $2 OR org = ANY($3) ORDER BY id",
    )
    .bind(&c.username)
    .bind(c.grants.allows(rbac::USERS, rbac::MANAGE, ""))
    .bind(&managed)
    .fetch_all(&mc.db)
    .await?;
    let keys: Vec<Value> = rows
        .into_iter()
        .map(|(id, user, org, d, p)| {
            json!({"Id": id, "Username": user, "Org": org, "Description": d, "permissions": p})
        })
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}
