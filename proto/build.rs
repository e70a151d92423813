//! Generates the prost messages and tonic services from `proto/`. Needs `protoc` (Debian
//! `protobuf-compiler`, installed by `infra/install.sh`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // prost does not print rerun-if-changed for the .proto files itself.
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Objects are stored in etcd as JSON and shown by the CLI; missing fields take their defaults
        // so older stored objects still load after a field is added.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .compile_protos(
            &[
                "proto/edge/objects.proto",
                "proto/edge/notify.proto",
                "proto/edge/api.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
