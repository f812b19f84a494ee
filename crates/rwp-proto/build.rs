//! Generates the Rust code of proto/rwp/v1 with protox (no protoc needed).
//! Client stubs with the `client` feature, server traits with `server`.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["rwp/v1/spec.proto", "rwp/v1/jobs.proto", "rwp/v1/worker.proto"];
    let descriptors = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("rwp_v1_descriptor.bin"), descriptors.encode_to_vec())?;
    // `bytes` fields as `bytes::Bytes`: a weights version serialised once is
    // sliced into chunks for every stream without copying.
    tonic_prost_build::configure()
        .bytes(".")
        // Maps in a stable order (job labels print and compare sorted).
        .btree_map(".")
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
