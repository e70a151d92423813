//! AppApi: what a developer deploys — image, deployment type, access ports, default flavor.

use edge_common::Keyed;
use edge_proto::edge::app_api_server::AppApi;
use edge_proto::edge::{AccessType, App, AppKey, AppUpdate, ImageType, Result as ApiResult};
use tonic::{Request, Response, Status};

use super::{Api, ObjectStream, matches, now, result};
use crate::error::{CtrlError, Result, invalid};
use crate::validate;

pub struct AppService(pub Api);

const UPDATABLE: &[&str] = &[
    "image_path",
    "access_ports",
    "default_flavor",
    "auth_public_key",
    "official_fqdn",
    "command",
    "env",
    "deployment_manifest",
    "alert_policies",
    "access_type",
    "configs",
];
pub const DEPLOYMENTS: &[&str] = &["docker", "kubernetes", "vm", "helm"];

pub fn validate_key(k: &AppKey) -> Result<()> {
    validate::name("key.organization", &k.organization)?;
    validate::name("key.name", &k.name)?;
    validate::name("key.version", &k.version)
}

/// Fills defaults (image type from deployment and back) and checks every field.
fn normalize(a: &mut App, registries: &[String]) -> Result<()> {
    validate_key(&a.key.clone().unwrap_or_default())?;
    let image_type = ImageType::try_from(a.image_type)
        .map_err(|_| invalid(format!("invalid image_type {}", a.image_type)))?;
    let image_type = match (image_type, a.deployment.as_str()) {
        (ImageType::Unknown, "docker" | "kubernetes") => ImageType::Docker,
        (ImageType::Unknown, "vm") => ImageType::Qcow,
        (ImageType::Unknown, "helm") => ImageType::Helm,
        (ImageType::Unknown, _) => {
            return Err(invalid(
                "image_type is required (IMAGE_TYPE_DOCKER, IMAGE_TYPE_QCOW or IMAGE_TYPE_HELM), or a deployment to derive it from",
            ));
        }
        (t, _) => t,
    };
    a.image_type = image_type as i32;
    if a.deployment.is_empty() {
        a.deployment = match image_type {
            ImageType::Qcow => "vm",
            ImageType::Helm => "helm",
            _ => "kubernetes",
        }
        .into();
    }
    if !DEPLOYMENTS.contains(&a.deployment.as_str()) {
        return Err(invalid(format!(
            "invalid deployment \"{}\": allowed are {}",
            a.deployment,
            DEPLOYMENTS.join(", ")
        )));
    }
    let fits = match a.deployment.as_str() {
        "docker" | "kubernetes" => image_type == ImageType::Docker,
        "vm" => image_type == ImageType::Qcow,
        _ => image_type == ImageType::Helm,
    };
    if !fits {
        return Err(invalid(format!(
            "image_type {} does not fit deployment \"{}\": docker and kubernetes need IMAGE_TYPE_DOCKER, vm needs IMAGE_TYPE_QCOW, helm needs IMAGE_TYPE_HELM",
            image_type.as_str_name(),
            a.deployment
        )));
    }
    a.access_type = match AccessType::try_from(a.access_type) {
        Ok(AccessType::Direct) => return Err(invalid("Access Type Direct no longer supported")),
        Ok(_) => AccessType::LoadBalancer as i32,
        Err(_) => return Err(invalid("invalid AccessType")),
    };
    if a.registry_auth.is_some() {
        return Err(invalid(
            "registry_auth cannot be given: the platform reads registry credentials from its Vault",
        ));
    }
    validate_fields(a, registries)
}

/// Checks every field; `registries` are the platform's own image registries, where an App's image must
/// sit under its organization (`<registry>/<org>/<name>:<tag>`).
fn validate_fields(a: &App, registries: &[String]) -> Result<()> {
    if a.image_path.is_empty() {
        return Err(invalid("image_path is required"));
    }
    if a.image_path.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "invalid image_path \"{}\": must not contain spaces",
            a.image_path
        )));
    }
    if let Some(host) = edge_common::image_registry(&a.image_path)
        && registries.iter().any(|r| r.eq_ignore_ascii_case(host))
    {
        let org = &a.key.as_ref().map_or("", |k| k.organization.as_str());
        let path_org = a.image_path[host.len()..].split('/').nth(1).unwrap_or("");
        if !path_org.eq_ignore_ascii_case(org) {
            // MobiledgeX's text, with where the image must go.
            return Err(invalid(format!(
                "ImagePath for {host} registry using organization '{path_org}' does not match App developer name '{org}', must match (image_path {host}/{org}/<name>:<tag>)"
            )));
        }
    }
    if a.image_type == ImageType::Qcow as i32 {
        // NAME (in the cloudlet's image store), /absolute/path or an http(s) URL, with its checksum.
        let (path, sum) = a
            .image_path
            .rsplit_once('#')
            .unwrap_or((a.image_path.as_str(), ""));
        let sum_ok = match sum.split_once(':') {
            Some(("sha256", h)) => h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()),
            Some(("md5", h)) => h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()),
            _ => false,
        };
        if path.is_empty() || !sum_ok {
            return Err(invalid(format!(
                "invalid image_path \"{}\": a VM image is NAME, /path or an http(s) URL followed by #sha256:<64 hex digits> (or #md5:<32 hex digits>)",
                a.image_path
            )));
        }
    }
    if !a.access_ports.is_empty() {
        validate::access_ports("access_ports", &a.access_ports)?;
    }
    if let Some(f) = &a.default_flavor {
        validate::name("default_flavor.name", &f.name)?;
    }
    if !a.auth_public_key.is_empty() && !a.auth_public_key.contains("-----BEGIN PUBLIC KEY-----") {
        return Err(invalid(
            "invalid auth_public_key: must be a PEM public key (-----BEGIN PUBLIC KEY-----)",
        ));
    }
    let fqdn_ok = a.official_fqdn.len() <= 253
        && a.official_fqdn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !fqdn_ok {
        return Err(invalid(format!(
            "invalid official_fqdn \"{}\": letters, digits, '.' and '-' only, at most 253 characters",
            a.official_fqdn
        )));
    }
    for c in &a.configs {
        let wants = match c.kind.as_str() {
            "helmCustomizationYaml" => Some("helm"),
            "envVarsYaml" => Some("kubernetes"),
            "appAccessCustomization" => None,
            _ => return Err(invalid(format!("Invalid Config Kind - {}", c.kind))),
        };
        if wants.is_some_and(|d| d != a.deployment) {
            return Err(invalid(format!(
                "Invalid Config Kind({}) for deployment type({})",
                c.kind, a.deployment
            )));
        }
        if c.config.is_empty() {
            return Err(invalid(format!("Empty config for config kind {}", c.kind)));
        }
    }
    for (i, p) in a.alert_policies.iter().enumerate() {
        validate::name(&format!("alert_policies[{i}]"), p)?;
    }
    for k in a.env.keys() {
        let ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid(format!(
                "invalid env name \"{k}\": letters, digits and '_', not starting with a digit"
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl AppApi for AppService {
    async fn create_app(&self, req: Request<App>) -> Result<Response<ApiResult>, Status> {
        let mut a = req.into_inner();
        normalize(&mut a, &self.0.config.registries)?;
        self.0
            .check_org_quota::<App>(&a.key.clone().unwrap_or_default().organization)?;
        a.created_at = now();
        a.updated_at = a.created_at;
        if let Some(s) = &self.0.secrets {
            s.store(&mut a).await?;
        }
        if let Err(e) = self.0.create_plain(&a).await {
            if let Some(s) = &self.0.secrets {
                s.forget(&a).await;
            }
            return Err(e.into());
        }
        Ok(Response::new(result("App created")))
    }

    async fn update_app(&self, req: Request<AppUpdate>) -> Result<Response<ApiResult>, Status> {
        let AppUpdate { app, fields } = req.into_inner();
        let mut new = app.ok_or_else(|| invalid("app is required"))?;
        let fields = validate::check_fields(&fields, UPDATABLE)?;
        let key = new.key.clone().unwrap_or_default();
        validate_key(&key)?;
        // Ports cannot change under running instances: checked inside the update's transaction.
        let ports_change = fields.iter().any(|f| f == "access_ports");
        // New env values go to Vault first; the old ones are deleted once the update committed.
        let secrets = self
            .0
            .secrets
            .as_ref()
            .filter(|_| fields.iter().any(|f| f == "env"));
        let old = self.0.cache.get::<App>(&key.key_string());
        if let Some(s) = secrets {
            s.store(&mut new).await?;
        }
        let updated = self
            .0
            .update_guarded::<App>(&key.key_string(), ports_change, |a| {
                for field in &fields {
                    match field.as_str() {
                        "image_path" => a.image_path = new.image_path.clone(),
                        "access_ports" => a.access_ports = new.access_ports.clone(),
                        "default_flavor" => a.default_flavor = new.default_flavor.clone(),
                        "auth_public_key" => a.auth_public_key = new.auth_public_key.clone(),
                        "official_fqdn" => a.official_fqdn = new.official_fqdn.clone(),
                        "command" => a.command = new.command.clone(),
                        "env" => a.env = new.env.clone(),
                        "alert_policies" => a.alert_policies = new.alert_policies.clone(),
                        "access_type" if new.access_type == AccessType::Direct as i32 => {
                            return Err(invalid("Access Type Direct no longer supported"));
                        }
                        "access_type" => a.access_type = AccessType::LoadBalancer as i32,
                        "configs" => a.configs = new.configs.clone(),
                        _ => a.deployment_manifest = new.deployment_manifest.clone(),
                    }
                }
                a.updated_at = now();
                validate_fields(a, &self.0.config.registries)
            })
            .await;
        if let Some(s) = secrets {
            match (&updated, old) {
                (Ok(_), Some(old)) => s.forget(&old).await,
                (Err(_), _) => s.forget(&new).await,
                _ => {}
            }
        }
        updated.map_err(|e| match e {
            CtrlError::FailedPrecondition(m) if ports_change => {
                CtrlError::FailedPrecondition(format!(
                    "access_ports of App \"{}\" cannot change: {m}",
                    key.key_string()
                ))
            }
            e => e,
        })?;
        Ok(Response::new(result("App updated")))
    }

    async fn delete_app(&self, req: Request<App>) -> Result<Response<ApiResult>, Status> {
        let key = req.into_inner().key.unwrap_or_default();
        validate_key(&key)?;
        let old = self.0.cache.get::<App>(&key.key_string());
        self.0.delete_plain::<App>(&key.key_string()).await?;
        if let (Some(s), Some(old)) = (&self.0.secrets, old) {
            s.forget(&old).await;
        }
        Ok(Response::new(result("App deleted")))
    }

    type ShowAppStream = ObjectStream<App>;
    async fn show_app(&self, req: Request<App>) -> Result<Response<Self::ShowAppStream>, Status> {
        let f = req.into_inner().key.unwrap_or_default();
        Ok(Response::new(self.0.show(|a: &App| {
            let k = a.key.clone().unwrap_or_default();
            matches(&f.organization, &k.organization)
                && matches(&f.name, &k.name)
                && matches(&f.version, &k.version)
        })))
    }
}
