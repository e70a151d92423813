//! Generates the prost messages and tonic services from `proto/`. Needs `protoc` (Debian
//! `protobuf-compiler`, installed by `infra/install.sh`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // prost does not print rerun-if-changed for the .proto files itself.
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Malformed requests are InvalidArgument, not Internal (src/codec.rs).
        .codec_path("crate::codec::Codec")
        // Objects are stored in etcd as JSON and shown by the CLI; missing fields take their defaults
        // so older stored objects still load after a field is added.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        // The DME's REST gateway walks these descriptors to speak MobiledgeX's JSON.
        .file_descriptor_set_path(out.join("descriptors.bin"))
        .compile_with_config(
            {
                // `prost::Name` on every message: its full proto name finds its descriptor.
                let mut c = prost_build::Config::new();
                c.enable_type_names();
                c
            },
            &[
                "proto/edge/objects.proto",
                "proto/edge/notify.proto",
                "proto/edge/api.proto",
                "proto/dme/app-client.proto",
                "proto/bench/echo.proto",
            ],
            // dme/*.proto import each other by bare name, as MobiledgeX's files do.
            &["proto", "proto/dme"],
        )?;
    Ok(())
}
