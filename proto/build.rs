//! Compiles the .proto tree with protox (pure Rust, no protoc) and generates
//! prost messages and tonic services from the same descriptor set that is
//! embedded for reflection and HTTP transcoding.

use std::{env, fs, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "nordlys/v1/common.proto",
    "nordlys/v1/projects.proto",
    "nordlys/v1/users.proto",
    "nordlys/v1/memberships.proto",
    "nordlys/v1/networks.proto",
    "nordlys/v1/access_rules.proto",
    "nordlys/v1/regions.proto",
    "nordlys/v1/organizations.proto",
    "nordlys/v1/quotas.proto",
    "nordlys/regiond/v1/regiond.proto",
    "nordlys/quota/v1/quota.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(FILES)?;
    // Encode straight from protox: re-encoding a prost_types set would drop
    // the google.api.http extension options the HTTP gateway needs.
    let encoded = compiler.encode_file_descriptor_set();
    fs::write(out.join("nordlys_descriptor.bin"), &encoded)?;

    let fds = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(false)
        .compile_fds(fds)?;
    Ok(())
}
