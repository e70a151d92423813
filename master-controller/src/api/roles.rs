//! Roles: bindings of users to an organization's roles, and what each role may do.

use super::*;

#[derive(Deserialize, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Role {
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub role: String,
}

pub(crate) async fn role_change(
    mc: &Mc,
    req: &HttpRequest,
    body: &Role,
    add: bool,
) -> Result<HttpResponse> {
    let c = caller(mc, req).await?;
    let call = async {
        if body.username.is_empty() {
            return Err(ApiError::bad_request("Username not specified"));
        }
        if body.role.is_empty() {
            return Err(ApiError::bad_request("Role not specified"));
        }
        let admin_role = rbac::is_admin_role(&body.role);
        if admin_role && !body.org.is_empty() {
            return Err(ApiError::bad_request(
                "Admin roles cannot be associated with an org, please specify the empty org \"\"",
            ));
        }
        if !admin_role && body.org.is_empty() {
            return Err(ApiError::bad_request(
                "Org name must be specified for the specified role",
            ));
        }
        if !rbac::ROLES.contains(&body.role.as_str()) {
            return Err(ApiError::bad_request("Role not found"));
        }
        if !admin_role {
            let t: Option<(String,)> =
                sqlx::query_as("SELECT type FROM organizations WHERE name = $1")
                    .bind(&body.org)
                    .fetch_optional(&mc.db)
                    .await?;
            let Some((org_type,)) = t else {
                // Only those who could manage it learn that an organization does not exist.
                require(&c, rbac::USERS, rbac::MANAGE, "")?;
                return Err(ApiError::not_found("Organization not found"));
            };
            let fits = (org_type == "developer" && body.role.starts_with("Developer"))
                || (org_type == "operator" && body.role.starts_with("Operator"));
            if !fits {
                return Err(ApiError::bad_request(format!(
                    "Can only assign {org_type} roles for {org_type} organization"
                )));
            }
        }
        require(&c, rbac::USERS, rbac::MANAGE, &body.org)?;
        if add {
            let r = sqlx::query("INSERT INTO roles (username, org, role) VALUES ($1, $2, $3)")
                .bind(&body.username)
                .bind(&body.org)
                .bind(&body.role)
                .execute(&mc.db)
                .await;
            match r {
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                    return Err(ApiError::not_found("Username not found"));
                }
                other => conflict_on_unique(other, || {
                    format!(
                        "User already has a role for org {}, please remove existing role first",
                        body.org
                    )
                })?,
            };
            Ok(ok("Role added to user"))
        } else {
            sqlx::query("DELETE FROM roles WHERE username = $1 AND org = $2 AND role = $3")
                .bind(&body.username)
                .bind(&body.org)
                .bind(&body.role)
                .execute(&mc.db)
                .await?;
            Ok(ok("Role removed from user"))
        }
    };
    audited(mc, req, &c.username, &body.org, &as_value(body), call).await
}

pub(crate) async fn role_adduser(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Role>,
) -> Result<HttpResponse> {
    role_change(&mc, &req, &body, true).await
}

pub(crate) async fn role_removeuser(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Role>,
) -> Result<HttpResponse> {
    role_change(&mc, &req, &body, false).await
}

pub(crate) async fn role_assignments(mc: web::Data<Mc>, c: Caller) -> Result<HttpResponse> {
    let rows: Vec<Role> = if c.grants.viewable_orgs(rbac::USERS).is_none() {
        sqlx::query_as("SELECT org, username, role FROM roles ORDER BY org, username")
            .fetch_all(&mc.db)
            .await?
    } else {
        sqlx::query_as("SELECT org, username, role FROM roles WHERE username = $1 ORDER BY org")
            .bind(&c.username)
            .fetch_all(&mc.db)
            .await?
    };
    Ok(HttpResponse::Ok().json(rows))
}

pub(crate) async fn role_perms(c: Caller) -> Result<HttpResponse> {
    let admin = c.grants.is_admin();
    let rows: Vec<Value> = rbac::table()
        .into_iter()
        .filter(|(role, _, _)| admin || !rbac::is_admin_role(role))
        .map(|(role, resource, action)| json!({"role": role, "resource": resource, "action": action}))
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}

pub(crate) async fn role_show(c: Caller) -> Result<HttpResponse> {
    let admin = c.grants.is_admin();
    let roles: Vec<&str> = rbac::ROLES
        .iter()
        .copied()
        .filter(|r| admin || !rbac::is_admin_role(r))
        .collect();
    Ok(HttpResponse::Ok().json(roles))
}
