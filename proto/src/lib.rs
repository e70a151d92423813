//! gRPC contracts of the edge platform, generated from `proto/` by `build.rs`.
//!
//! Every message derives serde (`Serialize`, `Deserialize`, missing fields default) so objects can be
//! stored in etcd as JSON and printed by the CLI.

pub mod codec;

/// Region objects, the notify stream and the controller API (proto package `edge`).
pub mod edge {
    tonic::include_proto!("edge");
}

/// The DME client API, wire-compatible with MobiledgeX (proto package `distributed_match_engine`).
pub mod dme {
    tonic::include_proto!("distributed_match_engine");
}

/// The package's own name, by which generated code of package `edge` refers to it.
pub use dme as distributed_match_engine;

/// A plain echo service, the baseline of `edge-bench`.
pub mod bench {
    tonic::include_proto!("bench");
}

/// Encoded `FileDescriptorSet` of every message above (for reflection, e.g. JSON gateways).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptors");

pub use edge::*;
