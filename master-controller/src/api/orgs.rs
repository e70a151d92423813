//! Organizations: create, update, delete (asking every region whether the org is in use), show.

use super::*;

#[derive(Default, Deserialize, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Organization)]
pub struct Org {
    #[serde(default, rename = "Name", alias = "name")]
    pub name: String,
    #[serde(default, rename = "Type", alias = "type")]
    pub r#type: String,
    #[serde(default, rename = "Address", alias = "address")]
    pub address: String,
    #[serde(default, rename = "Phone", alias = "phone")]
    pub phone: String,
}

/// Organization names only admins may take: the platform's own (compared case-insensitively).
pub const RESERVED_ORGS: &[&str] = &["edgecloud", "mobiledgex", "edgebox"];

pub(crate) async fn org_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Org>,
) -> Result<HttpResponse> {
    let call = async {
        no_api_key(&c, "create organizations")?;
        check_name("Name", &body.name)?;
        let manager = match body.r#type.as_str() {
            "developer" => rbac::DEVELOPER_MANAGER,
            "operator" => rbac::OPERATOR_MANAGER,
            _ => {
                return Err(ApiError::bad_request(
                    "Organization type must be developer, or operator",
                ));
            }
        };
        if RESERVED_ORGS.contains(&body.name.to_lowercase().as_str())
            && !c.grants.allows(rbac::USERS, rbac::MANAGE, "")
        {
            return Err(ApiError::bad_request(format!(
                "Not authorized to create reserved org {}",
                body.name
            )));
        }
        let user: Option<(String,)> =
            sqlx::query_as("SELECT name FROM users WHERE lower(name) = lower($1)")
                .bind(&body.name)
                .fetch_optional(&mc.db)
                .await?;
        if user.is_some() {
            return Err(ApiError::bad_request(
                "Org name cannot be same as existing user name",
            ));
        }
        let mut tx = mc.db.begin().await?;
        let r = sqlx::query(
            "INSERT INTO organizations (name, type, address, phone) VALUES ($1, $2, $3, $4)",
        )
        .bind(&body.name)
        .bind(&body.r#type)
        .bind(&body.address)
        .bind(&body.phone)
        .execute(&mut *tx)
        .await;
        conflict_on_unique(r, || {
            format!(
                "Organization with name {} (case-insensitive) already exists",
                body.name
            )
        })?;
        // The creator manages the new organization.
        sqlx::query("INSERT INTO roles (username, org, role) VALUES ($1, $2, $3)")
            .bind(&c.username)
            .bind(&body.name)
            .bind(manager)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ok("Organization created"))
    };
    audited(&mc, &req, &c.username, &body.name, &as_value(&*body), call).await
}

/// `/auth/org/update`: managers change the address and phone; the type never changes.
pub(crate) async fn org_update(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Value>,
) -> Result<HttpResponse> {
    update_org(mc, req, c, body, false).await
}

/// `/auth/restricted/org/update`: the same for admins, on any organization.
pub(crate) async fn restricted_org_update(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Value>,
) -> Result<HttpResponse> {
    update_org(mc, req, c, body, true).await
}

async fn update_org(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Value>,
    restricted: bool,
) -> Result<HttpResponse> {
    let m = fields_of(&body, &["name", "type", "address", "phone"])?;
    let name = str_field(&m, "name")?.unwrap_or_default().to_string();
    let call = async {
        if name.is_empty() {
            return Err(ApiError::bad_request("Organization name not specified"));
        }
        require(
            &c,
            rbac::USERS,
            rbac::MANAGE,
            if restricted { "" } else { &name },
        )?;
        let t: Option<(String,)> = sqlx::query_as("SELECT type FROM organizations WHERE name = $1")
            .bind(&name)
            .fetch_optional(&mc.db)
            .await?;
        let Some((org_type,)) = t else {
            return Err(ApiError::not_found("Organization not found"));
        };
        immutable(&m, &[("type", &org_type)])
            .map_err(|_| ApiError::bad_request("Cannot change Organization type"))?;
        sqlx::query(
            "UPDATE organizations SET address = coalesce($2, address), phone = coalesce($3, phone),
             updated_at = now() WHERE name = $1",
        )
        .bind(&name)
        .bind(str_field(&m, "address")?)
        .bind(str_field(&m, "phone")?)
        .execute(&mc.db)
        .await?;
        Ok(HttpResponse::Ok().finish())
    };
    audited(&mc, &req, &c.username, &name, &body, call).await
}

/// Deletes an organization that no region holds objects of. While the regions are asked, the org is
/// marked as being deleted, so no new object can be created in it meanwhile.
pub(crate) async fn org_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<NameOnly>,
) -> Result<HttpResponse> {
    let call = async {
        if body.name.is_empty() {
            return Err(ApiError::bad_request("Organization name not specified"));
        }
        require(&c, rbac::USERS, rbac::MANAGE, &body.name)?;
        let marked = sqlx::query(
            "UPDATE organizations SET delete_in_progress = true WHERE name = $1 AND NOT delete_in_progress",
        )
        .bind(&body.name)
        .execute(&mc.db)
        .await?;
        if marked.rows_affected() == 0 {
            let exists: Option<(String,)> =
                sqlx::query_as("SELECT name FROM organizations WHERE name = $1")
                    .bind(&body.name)
                    .fetch_optional(&mc.db)
                    .await?;
            return Err(match exists {
                Some(_) => ApiError::bad_request("Org already being deleted"),
                None => ApiError::not_found("Organization not found"),
            });
        }
        let unmark = || async {
            sqlx::query("UPDATE organizations SET delete_in_progress = false WHERE name = $1")
                .bind(&body.name)
                .execute(&mc.db)
                .await
        };
        match super::ctrl::org_in_use(&mc, &body.name).await {
            Ok(used) if used.is_empty() => {}
            Ok(used) => {
                unmark().await?;
                return Err(ApiError::bad_request(format!(
                    "Organization {} in use: {}; delete these first",
                    body.name,
                    used.join("; ")
                )));
            }
            Err(e) => {
                unmark().await?;
                return Err(ApiError::bad_request(format!(
                    "Organization {} in use check failed: {}",
                    body.name, e.message
                )));
            }
        }
        let mut tx = mc.db.begin().await?;
        sqlx::query("DELETE FROM organizations WHERE name = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM roles WHERE org = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE org = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ok("Organization deleted"))
    };
    audited(&mc, &req, &c.username, &body.name, &as_value(&*body), call).await
}

pub(crate) async fn org_show(
    mc: web::Data<Mc>,
    c: Caller,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let filter = ShowFilter::parse(&body, "Organization", &as_value(&Org::default()), &[])?;
    let orgs: Vec<Org> = match c.grants.viewable_orgs(rbac::USERS) {
        None => {
            sqlx::query_as("SELECT name, type, address, phone FROM organizations ORDER BY name")
                .fetch_all(&mc.db)
                .await?
        }
        Some(_) => {
            let mine: Vec<String> = c.grants.0.keys().cloned().collect();
            sqlx::query_as("SELECT name, type, address, phone FROM organizations WHERE name = ANY($1) ORDER BY name")
                .bind(&mine)
                .fetch_all(&mc.db)
                .await?
        }
    };
    let orgs: Vec<Org> = orgs.into_iter().filter(|o| filter.keeps(o)).collect();
    Ok(HttpResponse::Ok().json(orgs))
}
