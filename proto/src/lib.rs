//! gRPC contracts of the edge platform, generated from `proto/` by `build.rs`.
//!
//! Every message derives serde (`Serialize`, `Deserialize`, missing fields default) so objects can be
//! stored in etcd as JSON and printed by the CLI.

/// Region objects, the notify stream and the controller API (proto package `edge`).
pub mod edge {
    tonic::include_proto!("edge");
}

pub use edge::*;
