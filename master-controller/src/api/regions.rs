//! Regions: the regional controllers the MC forwards to (`/auth/controller/*`).

use super::*;

#[derive(Default, Deserialize, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Controller {
    #[serde(default, rename = "Region", alias = "region")]
    pub region: String,
    #[serde(default, rename = "Address", alias = "address")]
    pub address: String,
    #[serde(default, rename = "NotifyAddr", alias = "notifyaddr")]
    pub notify_addr: String,
    #[serde(default, rename = "InfluxDB", alias = "influxdb")]
    pub influxdb: String,
    /// PEM of the region's CA; empty at registration: taken from the region's PKI in Vault, if any
    #[serde(default, rename = "CaCert", alias = "cacert")]
    pub ca_cert: String,
    /// Name in the controller's certificate [default: controller.<region>.edge]
    #[serde(default, rename = "ServerName", alias = "servername")]
    pub server_name: String,
}

pub(crate) async fn controller_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Controller>,
) -> Result<HttpResponse> {
    let call = async {
        require(&c, rbac::CONTROLLERS, rbac::MANAGE, "")?;
        if body.region.is_empty() {
            return Err(ApiError::bad_request("Controller Region not specified"));
        }
        check_name("Region", &body.region)?;
        if body.address.is_empty() {
            return Err(ApiError::bad_request("Controller Address not specified"));
        }
        if !body.address.contains(':') {
            return Err(ApiError::bad_request(format!(
                "Invalid Address \"{}\": host:port",
                body.address
            )));
        }
        // mTLS to the controller: the CA given, else the region's CA in Vault; none means plaintext.
        let ca = if body.ca_cert.is_empty() {
            match mc.pki().region_ca(&body.region).await {
                Ok(ca) => ca,
                Err(edge_common::pki::PkiError::Invalid(_)) => String::new(),
                Err(e) => {
                    tracing::error!(error = %e, "reading the region's CA");
                    return Err(ApiError::unavailable("Vault is unavailable, retry later"));
                }
            }
        } else if body.ca_cert.contains("-----BEGIN CERTIFICATE-----") {
            body.ca_cert.clone()
        } else {
            return Err(ApiError::bad_request(
                "Invalid CaCert: a PEM certificate (-----BEGIN CERTIFICATE-----) is expected",
            ));
        };
        let server_name = if body.server_name.is_empty() {
            edge_common::pki::controller_server_name(&body.region)
        } else {
            body.server_name.clone()
        };
        let r = sqlx::query("INSERT INTO controllers (region, address, notify_addr, influxdb, ca_cert, server_name) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&body.region)
            .bind(&body.address)
            .bind(&body.notify_addr)
            .bind(&body.influxdb)
            .bind(ca)
            .bind(server_name)
            .execute(&mc.db)
            .await;
        conflict_on_unique(r, || {
            format!("Controller for region {} already exists", body.region)
        })?;
        Ok(ok("Controller registered"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

pub(crate) async fn controller_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Json<Controller>,
) -> Result<HttpResponse> {
    let call = async {
        require(&c, rbac::CONTROLLERS, rbac::MANAGE, "")?;
        let n = sqlx::query("DELETE FROM controllers WHERE region = $1")
            .bind(&body.region)
            .execute(&mc.db)
            .await?;
        mc.forget_region(&body.region);
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found(format!(
                "Region \"{}\" not found",
                body.region
            )));
        }
        Ok(ok("Controller deregistered"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

pub(crate) async fn controller_show(
    mc: web::Data<Mc>,
    c: Caller,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let filter = ShowFilter::parse(&body, "Controller", &as_value(&Controller::default()), &[])?;
    let rows: Vec<Controller> = sqlx::query_as(
        "SELECT region, address, notify_addr, influxdb, ca_cert, server_name FROM controllers ORDER BY region",
    )
    .fetch_all(&mc.db)
    .await?;
    // Without controllers:view a caller learns only the region names.
    let full = c.grants.allows(rbac::CONTROLLERS, rbac::VIEW, "");
    let rows: Vec<Controller> = rows
        .into_iter()
        .map(|r| {
            if full {
                r
            } else {
                Controller {
                    region: r.region,
                    address: String::new(),
                    notify_addr: String::new(),
                    influxdb: String::new(),
                    ca_cert: String::new(),
                    server_name: String::new(),
                }
            }
        })
        .filter(|r| filter.keeps(r))
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}
