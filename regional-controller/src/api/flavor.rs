//! FlavorApi: sizes of compute, region-wide, keyed by name.

use edge_proto::edge::flavor_api_server::FlavorApi;
use edge_proto::edge::{Flavor, FlavorUpdate, Result as ApiResult};
use tonic::{Request, Response, Status};

use super::{Api, ObjectStream, matches, result};
use crate::error::{Result, invalid};
use crate::validate;

pub struct FlavorService(pub Api);

const UPDATABLE: &[&str] = &["vcpus", "ram", "disk", "gpu"];

/// MobiledgeX's checks and texts, in its order: the name, then ram, vcpus and disk.
fn validate(f: &Flavor) -> Result<()> {
    validate::name("key.name", &f.key.clone().unwrap_or_default().name)
        .map_err(|_| invalid("Invalid flavor name"))?;
    for (field, v) in [("Ram", f.ram), ("Vcpus", f.vcpus), ("Disk", f.disk)] {
        if v == 0 {
            return Err(invalid(format!("{field} cannot be 0")));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl FlavorApi for FlavorService {
    async fn create_flavor(&self, req: Request<Flavor>) -> Result<Response<ApiResult>, Status> {
        let f = req.into_inner();
        validate(&f)?;
        self.0.create_plain(&f).await?;
        Ok(Response::new(result("Flavor created")))
    }

    async fn update_flavor(
        &self,
        req: Request<FlavorUpdate>,
    ) -> Result<Response<ApiResult>, Status> {
        let FlavorUpdate { flavor, fields } = req.into_inner();
        let new = flavor.ok_or_else(|| invalid("flavor is required"))?;
        let fields = validate::check_fields(&fields, UPDATABLE)?;
        let key = new.key.clone().unwrap_or_default().name;
        validate::name("key.name", &key)?;
        self.0
            .update_plain::<Flavor>(&key, |f| {
                for field in &fields {
                    match field.as_str() {
                        "vcpus" => f.vcpus = new.vcpus,
                        "ram" => f.ram = new.ram,
                        "disk" => f.disk = new.disk,
                        _ => f.gpu = new.gpu.clone(),
                    }
                }
                validate(f)
            })
            .await?;
        Ok(Response::new(result("Flavor updated")))
    }

    async fn delete_flavor(&self, req: Request<Flavor>) -> Result<Response<ApiResult>, Status> {
        let key = req.into_inner().key.unwrap_or_default().name;
        validate::name("key.name", &key)?;
        self.0.delete_plain::<Flavor>(&key).await?;
        Ok(Response::new(result("Flavor deleted")))
    }

    type ShowFlavorStream = ObjectStream<Flavor>;
    async fn show_flavor(
        &self,
        req: Request<Flavor>,
    ) -> Result<Response<Self::ShowFlavorStream>, Status> {
        let filter = req.into_inner().key.unwrap_or_default();
        Ok(Response::new(self.0.show(|f: &Flavor| {
            matches(&filter.name, &f.key.clone().unwrap_or_default().name)
        })))
    }
}
