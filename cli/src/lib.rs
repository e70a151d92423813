//! edgectl: command-line client of the edge platform.
//!
//! Through the master controller (the default): contexts saved by `edgectl login` ([`config`]), the
//! MC's REST API ([`mc`]), object kinds, arguments, files and tables ([`objects`]), and the object
//! commands with `apply` ([`ops`]); metrics ([`metrics`]). Directly to a regional controller
//! (`--controller`, the `--region-direct` mode of the architecture): `edgectl ctrl <Method> '<json>'`
//! calls one controller method with its request as JSON and prints the replies as JSON lines ([`call`]).

pub mod config;
pub mod mc;
pub mod metrics;
pub mod objects;
pub mod ops;

use edge_proto::edge::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

/// Every controller method edgectl can call.
pub const METHODS: &[&str] = &[
    "CreateFlavor",
    "UpdateFlavor",
    "DeleteFlavor",
    "ShowFlavor",
    "CreateOperatorCode",
    "UpdateOperatorCode",
    "DeleteOperatorCode",
    "ShowOperatorCode",
    "CreateCloudlet",
    "UpdateCloudlet",
    "DeleteCloudlet",
    "ShowCloudlet",
    "RotateCloudletAccessKey",
    "ShowCloudletInfo",
    "CreateClusterInst",
    "UpdateClusterInst",
    "DeleteClusterInst",
    "ShowClusterInst",
    "CreateApp",
    "UpdateApp",
    "DeleteApp",
    "ShowApp",
    "CreateAppInst",
    "UpdateAppInst",
    "DeleteAppInst",
    "ShowAppInst",
    "ShowAlert",
    "RunCommand",
    "RunConsole",
    "ShowLogs",
    "CreateAlertPolicy",
    "UpdateAlertPolicy",
    "DeleteAlertPolicy",
    "ShowAlertPolicy",
];

fn parse<T: DeserializeOwned + Default>(json: &str, method: &str) -> anyhow::Result<T> {
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!("{method}: the request is not valid JSON for this method: {e}")
    })
}

fn print<T: Serialize>(item: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(item)?);
    Ok(())
}

/// Prints every message of a stream; fails with the stream's error.
async fn print_stream<T: Serialize>(mut s: tonic::Streaming<T>) -> anyhow::Result<()> {
    while let Some(item) = s.message().await.map_err(status)? {
        print(&item)?;
    }
    Ok(())
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Calls `method` on the controller behind `channel` with `json` as its request.
pub async fn call(channel: Channel, method: &str, json: &str) -> anyhow::Result<()> {
    macro_rules! unary {
        ($client:ident, $m:ident, $req:ty) => {{
            let r = $client::new(channel)
                .$m(parse::<$req>(json, method)?)
                .await
                .map_err(status)?;
            print(r.get_ref())
        }};
    }
    macro_rules! stream {
        ($client:ident, $m:ident, $req:ty) => {{
            let r = $client::new(channel)
                .$m(parse::<$req>(json, method)?)
                .await
                .map_err(status)?;
            print_stream(r.into_inner()).await
        }};
    }
    use alert_api_client::AlertApiClient as L;
    use alert_policy_api_client::AlertPolicyApiClient as P;
    use app_api_client::AppApiClient as A;
    use app_inst_api_client::AppInstApiClient as I;
    use cloudlet_api_client::CloudletApiClient as C;
    use cluster_inst_api_client::ClusterInstApiClient as K;
    use exec_api_client::ExecApiClient as E;
    use flavor_api_client::FlavorApiClient as F;
    use operator_code_api_client::OperatorCodeApiClient as O;
    match method {
        "CreateFlavor" => unary!(F, create_flavor, Flavor),
        "UpdateFlavor" => unary!(F, update_flavor, FlavorUpdate),
        "DeleteFlavor" => unary!(F, delete_flavor, Flavor),
        "ShowFlavor" => stream!(F, show_flavor, Flavor),
        "CreateOperatorCode" => unary!(O, create_operator_code, OperatorCode),
        "UpdateOperatorCode" => unary!(O, update_operator_code, OperatorCodeUpdate),
        "DeleteOperatorCode" => unary!(O, delete_operator_code, OperatorCode),
        "ShowOperatorCode" => stream!(O, show_operator_code, OperatorCode),
        "CreateCloudlet" => stream!(C, create_cloudlet, Cloudlet),
        "UpdateCloudlet" => unary!(C, update_cloudlet, CloudletUpdate),
        "DeleteCloudlet" => stream!(C, delete_cloudlet, Cloudlet),
        "ShowCloudlet" => stream!(C, show_cloudlet, Cloudlet),
        "RotateCloudletAccessKey" => unary!(C, rotate_cloudlet_access_key, CloudletKey),
        "ShowCloudletInfo" => stream!(C, show_cloudlet_info, CloudletInfo),
        "CreateClusterInst" => stream!(K, create_cluster_inst, ClusterInst),
        "UpdateClusterInst" => stream!(K, update_cluster_inst, ClusterInstUpdate),
        "DeleteClusterInst" => stream!(K, delete_cluster_inst, ClusterInst),
        "ShowClusterInst" => stream!(K, show_cluster_inst, ClusterInst),
        "CreateApp" => unary!(A, create_app, App),
        "UpdateApp" => unary!(A, update_app, AppUpdate),
        "DeleteApp" => unary!(A, delete_app, App),
        "ShowApp" => stream!(A, show_app, App),
        "CreateAppInst" => stream!(I, create_app_inst, AppInst),
        "UpdateAppInst" => stream!(I, update_app_inst, AppInstUpdate),
        "DeleteAppInst" => stream!(I, delete_app_inst, AppInst),
        "ShowAppInst" => stream!(I, show_app_inst, AppInst),
        "ShowAlert" => stream!(L, show_alert, Alert),
        "RunCommand" => unary!(E, run_command, ExecRequest),
        "RunConsole" => unary!(E, run_console, ExecRequest),
        "ShowLogs" => unary!(E, show_logs, ExecRequest),
        "CreateAlertPolicy" => unary!(P, create_alert_policy, AlertPolicy),
        "UpdateAlertPolicy" => unary!(P, update_alert_policy, AlertPolicyUpdate),
        "DeleteAlertPolicy" => unary!(P, delete_alert_policy, AlertPolicy),
        "ShowAlertPolicy" => stream!(P, show_alert_policy, AlertPolicy),
        other => anyhow::bail!(
            "unknown method \"{other}\"; methods: {}",
            METHODS.join(", ")
        ),
    }
}
