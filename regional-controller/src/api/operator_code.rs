//! OperatorCodeApi: mobile network codes (MCC+MNC) and the operator organization that runs each.

use edge_proto::edge::operator_code_api_server::OperatorCodeApi;
use edge_proto::edge::{OperatorCode, OperatorCodeUpdate, Result as ApiResult};
use tonic::{Request, Response, Status};

use super::{Api, ObjectStream, matches, result};
use crate::error::{Result, invalid};
use crate::validate;

pub struct OperatorCodeService(pub Api);

fn validate_code(code: &str) -> Result<()> {
    if code.is_empty() {
        return Err(invalid("code is required"));
    }
    if !(5..=6).contains(&code.len()) || !code.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(format!(
            "invalid code \"{code}\": must be 5 or 6 digits (MCC + MNC, e.g. 26201)"
        )));
    }
    Ok(())
}

fn validate(o: &OperatorCode) -> Result<()> {
    validate_code(&o.code)?;
    validate::name("organization", &o.organization)
}

#[tonic::async_trait]
impl OperatorCodeApi for OperatorCodeService {
    async fn create_operator_code(
        &self,
        req: Request<OperatorCode>,
    ) -> Result<Response<ApiResult>, Status> {
        let o = req.into_inner();
        validate(&o)?;
        self.0.create_plain(&o).await?;
        Ok(Response::new(result("OperatorCode created")))
    }

    async fn update_operator_code(
        &self,
        req: Request<OperatorCodeUpdate>,
    ) -> Result<Response<ApiResult>, Status> {
        let OperatorCodeUpdate {
            operator_code,
            fields,
        } = req.into_inner();
        let new = operator_code.ok_or_else(|| invalid("operator_code is required"))?;
        validate::check_fields(&fields, &["organization"])?;
        validate(&new)?;
        self.0
            .update_plain::<OperatorCode>(&new.code, |o| {
                o.organization = new.organization.clone();
                Ok(())
            })
            .await?;
        Ok(Response::new(result("OperatorCode updated")))
    }

    async fn delete_operator_code(
        &self,
        req: Request<OperatorCode>,
    ) -> Result<Response<ApiResult>, Status> {
        let o = req.into_inner();
        validate_code(&o.code)?;
        self.0.delete_plain::<OperatorCode>(&o.code).await?;
        Ok(Response::new(result("OperatorCode deleted")))
    }

    type ShowOperatorCodeStream = ObjectStream<OperatorCode>;
    async fn show_operator_code(
        &self,
        req: Request<OperatorCode>,
    ) -> Result<Response<Self::ShowOperatorCodeStream>, Status> {
        let f = req.into_inner();
        Ok(Response::new(self.0.show(|o: &OperatorCode| {
            matches(&f.code, &o.code) && matches(&f.organization, &o.organization)
        })))
    }
}
