//! CloudletApi: edge sites run by operators, onboarding with an access key, and CRM-reported info.

use edge_common::{Keyed, access_key};
use edge_proto::edge::cloudlet_api_server::CloudletApi;
use edge_proto::edge::{
    Cloudlet, CloudletAccess, CloudletInfo, CloudletKey, CloudletUpdate, PlatformType, Progress,
    Result as ApiResult, TrackedState,
};
use tonic::{Request, Response, Status};

use super::{Api, Goal, ObjectStream, ProgressStream, matches, now, result};
use crate::error::{CtrlError, Result, invalid};
use crate::objects::Tracked;
use crate::store::Write;
use crate::validate;

pub struct CloudletService(pub Api);

const UPDATABLE: &[&str] = &[
    "location",
    "num_dynamic_ips",
    "resource_quotas",
    "public_addr",
    "root_lb_fqdn",
];
/// Resource names a quota may limit (MobiledgeX's names).
pub const QUOTA_NAMES: &[&str] = &["vCPUs", "RAM", "Disk", "GPUs", "External IPs"];

pub fn validate_key(k: &CloudletKey) -> Result<()> {
    validate::name("key.organization", &k.organization)?;
    validate::name("key.name", &k.name)
}

fn validate_fields(c: &Cloudlet) -> Result<()> {
    validate::location("location", c.location.as_ref())?;
    for q in &c.resource_quotas {
        if !QUOTA_NAMES.contains(&q.name.as_str()) {
            return Err(invalid(format!(
                "invalid resource_quotas name \"{}\": allowed are {}",
                q.name,
                QUOTA_NAMES.join(", ")
            )));
        }
    }
    if c.public_addr.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(format!(
            "invalid public_addr \"{}\": must be an IP address",
            c.public_addr
        )));
    }
    if c.root_lb_fqdn.is_empty()
        || !c
            .root_lb_fqdn
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-')
    {
        return Err(invalid(format!(
            "invalid root_lb_fqdn \"{}\": letters, digits, '.' and '-' only",
            c.root_lb_fqdn
        )));
    }
    Ok(())
}

impl CloudletService {
    fn access(&self, key: &CloudletKey, private: String) -> CloudletAccess {
        CloudletAccess {
            cloudlet_key: Some(key.clone()),
            region: self.0.store.region.clone(),
            notify_addr: self.0.config.notify_public_addr.clone(),
            access_private_key: private,
            ca_certificate: self.0.ca.clone().unwrap_or_default(),
            server_name: match self.0.ca {
                Some(_) => edge_common::pki::controller_server_name(&self.0.store.region),
                None => String::new(),
            },
        }
    }
}

fn new_key_pair() -> Result<(String, String)> {
    access_key::generate().map_err(|e| CtrlError::FailedPrecondition(e.to_string()))
}

#[tonic::async_trait]
impl CloudletApi for CloudletService {
    type CreateCloudletStream = ProgressStream;
    async fn create_cloudlet(
        &self,
        req: Request<Cloudlet>,
    ) -> Result<Response<ProgressStream>, Status> {
        let mut c = req.into_inner();
        let key = c.key.clone().unwrap_or_default();
        validate_key(&key)?;
        PlatformType::try_from(c.platform_type)
            .map_err(|_| invalid(format!("invalid platform_type {}", c.platform_type)))?;
        if c.public_addr.is_empty() {
            c.public_addr = "127.0.0.1".into();
        }
        if c.root_lb_fqdn.is_empty() {
            c.root_lb_fqdn = format!(
                "{}.{}.{}.edgecloud.local",
                key.name, key.organization, self.0.store.region
            )
            .to_ascii_lowercase()
            .replace('_', "-");
        }
        validate_fields(&c)?;
        let (private, public) = new_key_pair()?;
        c.access_public_key = public;
        c.request(TrackedState::CreateRequested);
        c.created_at = now();
        c.updated_at = c.created_at;
        let events = self.0.cache.subscribe();
        self.0.create_plain(&c).await?;
        let first = Progress {
            message: format!(
                "Cloudlet \"{}\" created; start its CRM with this access key (shown only now) to bring it online",
                key.key_string()
            ),
            state: TrackedState::CreateRequested as i32,
            access: Some(self.access(&key, private)),
        };
        Ok(Response::new(self.0.follow::<Cloudlet>(
            key.key_string(),
            events,
            Goal::Ready,
            vec![first],
        )))
    }

    async fn update_cloudlet(
        &self,
        req: Request<CloudletUpdate>,
    ) -> Result<Response<ApiResult>, Status> {
        let CloudletUpdate { cloudlet, fields } = req.into_inner();
        let new = cloudlet.ok_or_else(|| invalid("cloudlet is required"))?;
        let fields = validate::check_fields(&fields, UPDATABLE)?;
        let key = new.key.clone().unwrap_or_default();
        validate_key(&key)?;
        self.0
            .update_plain::<Cloudlet>(&key.key_string(), |c| {
                for field in &fields {
                    match field.as_str() {
                        "location" => c.location = new.location,
                        "num_dynamic_ips" => c.num_dynamic_ips = new.num_dynamic_ips,
                        "resource_quotas" => c.resource_quotas = new.resource_quotas.clone(),
                        "public_addr" => c.public_addr = new.public_addr.clone(),
                        _ => c.root_lb_fqdn = new.root_lb_fqdn.clone(),
                    }
                }
                c.updated_at = now();
                validate_fields(c)
            })
            .await?;
        Ok(Response::new(result("Cloudlet updated")))
    }

    type DeleteCloudletStream = ProgressStream;
    async fn delete_cloudlet(
        &self,
        req: Request<Cloudlet>,
    ) -> Result<Response<ProgressStream>, Status> {
        let key = req.into_inner().key.unwrap_or_default();
        validate_key(&key)?;
        let ks = key.key_string();
        let api = &self.0;
        let events = api.cache.subscribe();
        // Nothing runs on a cloudlet without a ClusterInst or AppInst on it, so it goes at once, with its
        // reported info and connection marker; a connected CRM sees the delete and stops serving it.
        api.write(&format!("Cloudlet \"{ks}\""), || async {
            let cur = api.store.must_get::<Cloudlet>(&ks).await?;
            let mut w = Write::default();
            api.guard_unused::<Cloudlet>(&mut w, &ks).await?;
            let path = api.store.path_of(&cur.obj);
            w.unchanged(&path, cur.rev);
            w.delete(&path);
            w.delete(&api.store.path(CloudletInfo::KIND, &ks));
            w.delete(&api.store.conn_key(&ks));
            api.store.commit(w).await
        })
        .await?;
        Ok(Response::new(api.follow::<Cloudlet>(
            ks,
            events,
            Goal::Gone,
            Vec::new(),
        )))
    }

    type ShowCloudletStream = ObjectStream<Cloudlet>;
    async fn show_cloudlet(
        &self,
        req: Request<Cloudlet>,
    ) -> Result<Response<Self::ShowCloudletStream>, Status> {
        let f = req.into_inner().key.unwrap_or_default();
        Ok(Response::new(
            self.0.show(|c: &Cloudlet| key_matches(&f, c.key.as_ref())),
        ))
    }

    async fn rotate_cloudlet_access_key(
        &self,
        req: Request<CloudletKey>,
    ) -> Result<Response<CloudletAccess>, Status> {
        let key = req.into_inner();
        validate_key(&key)?;
        let (private, public) = new_key_pair()?;
        self.0
            .update_plain::<Cloudlet>(&key.key_string(), |c| {
                c.access_public_key = public.clone();
                c.updated_at = now();
                Ok(())
            })
            .await?;
        Ok(Response::new(self.access(&key, private)))
    }

    type ShowCloudletInfoStream = ObjectStream<CloudletInfo>;
    async fn show_cloudlet_info(
        &self,
        req: Request<CloudletInfo>,
    ) -> Result<Response<Self::ShowCloudletInfoStream>, Status> {
        let f = req.into_inner().key.unwrap_or_default();
        Ok(Response::new(
            self.0
                .show(|c: &CloudletInfo| key_matches(&f, c.key.as_ref())),
        ))
    }
}

pub fn key_matches(filter: &CloudletKey, key: Option<&CloudletKey>) -> bool {
    let k = key.cloned().unwrap_or_default();
    matches(&filter.organization, &k.organization) && matches(&filter.name, &k.name)
}
