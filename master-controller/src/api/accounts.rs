//! Accounts: login, user creation, the caller's account, user show/delete/update and the admin's
//! restricted update (lock/unlock).

use super::*;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct Login {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub totp: String,
    #[serde(default)]
    pub apikeyid: String,
    #[serde(default)]
    pub apikey: String,
}

pub(crate) async fn login(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Login>,
) -> Result<HttpResponse> {
    let by_key = !body.apikeyid.is_empty() || !body.apikey.is_empty();
    let call = async {
        if by_key {
            if body.apikeyid.is_empty() {
                return Err(ApiError::bad_request("apikeyid not specified"));
            }
            if body.apikey.is_empty() {
                return Err(ApiError::bad_request("apikey not specified"));
            }
        } else {
            if body.username.is_empty() {
                return Err(ApiError::bad_request("Username not specified"));
            }
            if body.password.is_empty() {
                return Err(ApiError::bad_request("Please specify password"));
            }
        }
        // (name, email, hash, id, token generation, locked)
        let found: Option<(String, String, String, i64, i64, bool)> = if by_key {
            sqlx::query_as(
                "SELECT u.name, u.email, k.keyhash, u.id, u.token_gen, u.locked
                 FROM api_keys k JOIN users u ON u.name = k.username WHERE k.id = $1",
            )
            .bind(&body.apikeyid)
            .fetch_optional(&mc.db)
            .await?
        } else {
            // The user name or the email: one account, one throttle counter.
            sqlx::query_as(
                "SELECT name, email, passhash, id, token_gen, locked FROM users
                 WHERE lower(name) = lower($1) OR lower(email) = lower($1)",
            )
            .bind(&body.username)
            .fetch_optional(&mc.db)
            .await?
        };
        let account = match (&found, by_key) {
            (_, true) => format!("apikey:{}", body.apikeyid),
            (Some(f), false) => format!("user:{}", f.0.to_lowercase()),
            (None, false) => format!("user:{}", body.username.to_lowercase()),
        };
        let attempt = mc
            .throttle
            .attempt(&[account, format!("ip:{}", client_ip(&req))])?;
        let secret = if by_key { &body.apikey } else { &body.password };
        let verified = match &found {
            Some(f) => auth::verify_async(secret, &f.2).await,
            None => false,
        };
        let Some((name, email, _, id, token_gen, locked)) = found.filter(|_| verified) else {
            tokio::time::sleep(mc.bad_auth_delay).await;
            return Err(ApiError::bad_request(if by_key {
                "Invalid ApiKey or ApiKeyId"
            } else {
                "Invalid username or password"
            }));
        };
        mc.throttle.succeeded(attempt);
        if locked {
            return Err(ApiError::bad_request(LOCKED));
        }
        let account = auth::Account {
            name: &name,
            email: &email,
            id,
            token_gen,
        };
        let token = mc
            .tokens
            .issue(&account, if by_key { &body.apikeyid } else { "" });
        let admin: Option<(String,)> =
            sqlx::query_as("SELECT role FROM roles WHERE username = $1 AND org = ''")
                .bind(&name)
                .fetch_optional(&mc.db)
                .await?;
        let mut reply = json!({ "token": token });
        if admin.is_some() && !by_key {
            reply["admin"] = json!(true);
        }
        Ok(HttpResponse::Ok().json(reply))
    };
    // An unauthenticated route: the audit log gets who tried, never the body.
    let summary = if by_key {
        json!({ "apikeyid": body.apikeyid })
    } else {
        json!({ "username": body.username })
    };
    audited(&mc, &req, &body.username, "", &summary, call).await
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub(crate) struct NewUser {
    #[serde(default, rename = "Name", alias = "name")]
    name: String,
    #[serde(default, rename = "Email", alias = "email")]
    email: String,
    /// MobiledgeX sends the plaintext password in this field.
    #[serde(default, rename = "Passhash", alias = "passhash")]
    passhash: String,
}

pub(crate) async fn user_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<NewUser>,
) -> Result<HttpResponse> {
    let call = async {
        // Every create counts, successful or not: account creation is throttled per client address.
        mc.throttle
            .attempt_limited(&[format!("create:{}", client_ip(&req))], |_| {
                mc.user_create_limit
            })
            .map_err(|e| {
                // MobiledgeX's rate limiter's words.
                ApiError::new(
                    e.status,
                    format!(
                        "{} is rejected, please retry later. Error is: Client exceeded api rate limit per ip.",
                        req.path()
                    ),
                )
            })?;
        check_name("Name", &body.name)?;
        if !valid_email(&body.email) {
            return Err(ApiError::bad_request("Invalid email address"));
        }
        auth::check_password_length(&body.passhash)?;
        if name_taken_by_org(&mc, &body.name).await? {
            return Err(ApiError::bad_request(
                "User name cannot be same as org name",
            ));
        }
        auth::check_password_strength(&body.name, &body.passhash)?;
        let hash = auth::hash_async(&body.passhash).await;
        let r = sqlx::query("INSERT INTO users (name, email, passhash) VALUES ($1, $2, $3)")
            .bind(&body.name)
            .bind(&body.email)
            .bind(hash)
            .execute(&mc.db)
            .await;
        unique_user(r, &body.name)?;
        Ok(HttpResponse::Ok()
            .json(json!({"Message": "user created", "TOTPSharedKey": "", "TOTPQRImage": null})))
    };
    let summary = json!({ "Name": body.name, "Email": body.email });
    audited(&mc, &req, &body.name, "", &summary, call).await
}

/// MobiledgeX's email rule (`(.+)@(.+)\.(.+)`), within SMTP's length.
pub(super) fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && e.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty()
                && domain
                    .rsplit_once('.')
                    .is_some_and(|(host, top)| !host.is_empty() && !top.is_empty())
        })
}

/// Maps a unique violation on the users table to the message naming what is taken.
pub(super) fn unique_user<T>(r: std::result::Result<T, sqlx::Error>, name: &str) -> Result<T> {
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::conflict(
            if e.constraint().is_some_and(|c| c.contains("email")) {
                "Email already in use".to_string()
            } else {
                format!("Username with name {name} (case-insensitive) already exists")
            },
        )),
        other => Ok(other?),
    }
}

pub(crate) async fn name_taken_by_org(mc: &Mc, name: &str) -> Result<bool> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT name FROM organizations WHERE lower(name) = lower($1)")
            .bind(name)
            .fetch_optional(&mc.db)
            .await?;
    Ok(r.is_some())
}

#[derive(Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = User)]
pub(crate) struct UserOut {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Email")]
    email: String,
    #[serde(rename = "FamilyName")]
    family_name: String,
    #[serde(rename = "GivenName")]
    given_name: String,
    #[serde(rename = "Nickname")]
    nickname: String,
    #[serde(rename = "EmailVerified")]
    email_verified: bool,
    #[serde(rename = "Locked")]
    locked: bool,
}

/// Users holding a role (`role`, any when `None`) in one of `orgs` (any org when `None`); every user when
/// both are `None`.
pub(crate) async fn users(
    mc: &Mc,
    orgs: Option<Vec<String>>,
    role: Option<String>,
) -> Result<Vec<UserOut>> {
    Ok(sqlx::query_as(
        "SELECT name, email, family_name, given_name, nickname, email_verified, locked FROM users
         WHERE ($1::text[] IS NULL AND $2::text IS NULL) OR name IN
           (SELECT username FROM roles WHERE ($1::text[] IS NULL OR org = ANY($1))
                                         AND ($2::text IS NULL OR role = $2))
         ORDER BY name",
    )
    .bind(orgs)
    .bind(role)
    .fetch_all(&mc.db)
    .await?)
}

pub(crate) async fn user_current(mc: web::Data<Mc>, c: Caller) -> Result<HttpResponse> {
    let u: UserOut = sqlx::query_as(
        "SELECT name, email, family_name, given_name, nickname, email_verified, locked FROM users
         WHERE name = $1",
    )
    .bind(&c.username)
    .fetch_one(&mc.db)
    .await?;
    Ok(HttpResponse::Ok().json(u))
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[schema(as = NewPassword)]
pub(crate) struct NewPass {
    #[serde(default)]
    currentpassword: String,
    #[serde(default)]
    password: String,
}

/// Changes the caller's password; every token issued before (this one included) stops working.
pub(crate) async fn user_newpass(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<NewPass>,
) -> Result<HttpResponse> {
    let call = async {
        no_api_key(&c, "change the password")?;
        if body.currentpassword.is_empty() {
            return Err(ApiError::bad_request("Please specify current password"));
        }
        if body.password.is_empty() {
            return Err(ApiError::bad_request("Please specify new password"));
        }
        let (hash,): (String,) = sqlx::query_as("SELECT passhash FROM users WHERE name = $1")
            .bind(&c.username)
            .fetch_one(&mc.db)
            .await?;
        if !auth::verify_async(&body.currentpassword, &hash).await {
            tokio::time::sleep(mc.bad_auth_delay).await;
            return Err(ApiError::bad_request("Invalid current password"));
        }
        auth::check_password(&c.username, &body.password)?;
        sqlx::query(
            "UPDATE users SET passhash = $2, token_gen = token_gen + 1, updated_at = now() WHERE name = $1",
        )
        .bind(&c.username)
        .bind(auth::hash_async(&body.password).await)
        .execute(&mc.db)
        .await?;
        Ok(ok("Password updated"))
    };
    audited(&mc, &req, &c.username, "", &json!({}), call).await
}

/// `/auth/user/show`: the users holding roles in orgs the caller may view users of (everyone for admins),
/// filtered by user fields and `org`/`role`; a filter on an org the caller may not view is a 403.
pub(crate) async fn user_show(
    mc: web::Data<Mc>,
    c: Caller,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let mut filter = ShowFilter::parse(
        &body,
        "User",
        &as_value(&UserOut::default()),
        &["org", "role"],
    )?;
    let (org, role) = (filter.take("org"), filter.take("role"));
    let orgs = match (c.grants.viewable_orgs(rbac::USERS), org) {
        (Some(orgs), _) if orgs.is_empty() => return Err(ApiError::forbidden()),
        (Some(orgs), Some(org)) if !orgs.contains(&org) => return Err(ApiError::forbidden()),
        (_, Some(org)) => Some(vec![org]),
        (None, None) => None,
        (Some(orgs), None) => Some(orgs.into_iter().collect()),
    };
    let users = users(&mc, orgs, role).await?;
    let users: Vec<UserOut> = users.into_iter().filter(|u| filter.keeps(u)).collect();
    Ok(HttpResponse::Ok().json(users))
}

pub(crate) async fn user_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<NameOnly>,
) -> Result<HttpResponse> {
    let call = async {
        no_api_key(&c, "delete users")?;
        if body.name.is_empty() {
            return Err(ApiError::bad_request("User Name not specified"));
        }
        if body.name != c.username {
            require(&c, rbac::USERS, rbac::MANAGE, "")?;
        }
        if body.name.eq_ignore_ascii_case(&mc.superuser) {
            return Err(ApiError::bad_request("Cannot delete superuser"));
        }
        // No org (nor the platform) may lose its last manager: the manager bindings of the user's orgs are
        // locked, then checked, then the user deleted, in one transaction (two deletes cannot each leave
        // the other as the last).
        let mut tx = mc.db.begin().await?;
        sqlx::query(
            "SELECT 1 FROM roles WHERE role IN ($2, $3, $4)
               AND org IN (SELECT org FROM roles WHERE username = $1) FOR UPDATE",
        )
        .bind(&body.name)
        .bind(rbac::ADMIN_MANAGER)
        .bind(rbac::DEVELOPER_MANAGER)
        .bind(rbac::OPERATOR_MANAGER)
        .execute(&mut *tx)
        .await?;
        let orphaned: Option<(String, String)> = sqlx::query_as(
            "SELECT r.org, r.role FROM roles r
             WHERE r.username = $1 AND r.role IN ($2, $3, $4)
               AND NOT EXISTS (SELECT 1 FROM roles o WHERE o.org = r.org AND o.role = r.role
                                                     AND o.username <> $1)
             ORDER BY r.org LIMIT 1",
        )
        .bind(&body.name)
        .bind(rbac::ADMIN_MANAGER)
        .bind(rbac::DEVELOPER_MANAGER)
        .bind(rbac::OPERATOR_MANAGER)
        .fetch_optional(&mut *tx)
        .await?;
        match orphaned {
            Some((_, role)) if role == rbac::ADMIN_MANAGER => {
                return Err(ApiError::bad_request(
                    "Error: Cannot delete the last remaining AdminManager",
                ));
            }
            Some((org, _)) => {
                return Err(ApiError::bad_request(format!(
                    "Error: Cannot delete the last remaining manager for the org {org}"
                )));
            }
            None => {}
        }
        let n = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("User {} not found", body.name)));
        }
        tx.commit().await?;
        Ok(ok("User deleted"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

/// `/auth/user/update`: the caller changes their email and names. As MobiledgeX's MC, a read-only field is
/// refused only when its value changes (so a client may send back the user it was shown), checked in
/// MobiledgeX's order; fields this platform does not keep (TOTP, picture, metadata, the email
/// verification request) are accepted and ignored.
pub(crate) async fn user_update(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Value>,
) -> Result<HttpResponse> {
    let call = async {
        no_api_key(&c, "update users")?;
        let m = fields_of(&body, &[USER_FIELDS, USER_IGNORED].concat())?;
        let (current_email, email_verified, locked): (String, bool, bool) =
            sqlx::query_as("SELECT email, email_verified, locked FROM users WHERE name = $1")
                .bind(&c.username)
                .fetch_optional(&mc.db)
                .await?
                .ok_or_else(|| ApiError::bad_request("User not found"))?;
        if str_field(&m, "name")?.is_some_and(|n| n != c.username) {
            return Err(ApiError::bad_request("Cannot change username"));
        }
        if bool_field(&m, "emailverified")?.is_some_and(|v| v != email_verified) {
            return Err(ApiError::bad_request("Cannot change emailverified"));
        }
        if str_field(&m, "passhash")?.is_some_and(|p| !p.is_empty()) {
            return Err(ApiError::bad_request("Cannot change passhash"));
        }
        if bool_field(&m, "locked")?.is_some_and(|v| v != locked) {
            return Err(ApiError::bad_request("Cannot change locked"));
        }
        // (Checked only when it changes, as MobiledgeX did.)
        let email = str_field(&m, "email")?.filter(|e| *e != current_email);
        if email.is_some_and(|e| !valid_email(e)) {
            return Err(ApiError::bad_request("Invalid email address"));
        }
        let r = sqlx::query(
            "UPDATE users SET
               email_verified = email_verified AND (coalesce($2, email) = email),
               email = coalesce($2, email), family_name = coalesce($3, family_name),
               given_name = coalesce($4, given_name), nickname = coalesce($5, nickname),
               updated_at = now()
             WHERE name = $1",
        )
        .bind(&c.username)
        .bind(email)
        .bind(str_field(&m, "familyname")?)
        .bind(str_field(&m, "givenname")?)
        .bind(str_field(&m, "nickname")?)
        .execute(&mc.db)
        .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ApiError::conflict(format!(
                    "Email {} already in use",
                    email.unwrap_or_default()
                )));
            }
            r => r?,
        };
        Ok(HttpResponse::Ok()
            .json(json!({"Message": "user updated", "TOTPSharedKey": "", "TOTPQRImage": null})))
    };
    audited(&mc, &req, &c.username, "", &body, call).await
}

/// `/auth/restricted/user/update` (admins): lock or unlock an account (which ends its tokens), mark its
/// email verified, fix its names.
pub(crate) async fn restricted_user_update(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Value>,
) -> Result<HttpResponse> {
    let call = async {
        require(&c, rbac::USERS, rbac::MANAGE, "")?;
        // (As MobiledgeX's MC: the name and email find the user, a password is never set here, and the
        // fields this platform does not keep are ignored.)
        let m = fields_of(&body, &[USER_FIELDS, USER_IGNORED].concat())?;
        let name = str_field(&m, "name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::bad_request("User Name not specified"));
        }
        let locked = bool_field(&m, "locked")?;
        let n = sqlx::query(
            "UPDATE users SET
               token_gen = token_gen + CASE WHEN $2::bool IS NOT NULL AND $2 <> locked THEN 1 ELSE 0 END,
               locked = coalesce($2, locked), email_verified = coalesce($3, email_verified),
               family_name = coalesce($4, family_name), given_name = coalesce($5, given_name),
               nickname = coalesce($6, nickname), updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(locked)
        .bind(bool_field(&m, "emailverified")?)
        .bind(str_field(&m, "familyname")?)
        .bind(str_field(&m, "givenname")?)
        .bind(str_field(&m, "nickname")?)
        .execute(&mc.db)
        .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("User {name} not found")));
        }
        Ok(HttpResponse::Ok().finish())
    };
    audited(&mc, &req, &c.username, "", &body, call).await
}
