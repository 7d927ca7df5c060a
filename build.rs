//! Compiles `proto/` with protox (no system `protoc`), generates the tonic
//! services and writes the file descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "agentstream/v1/common.proto",
    "agentstream/v1/chat.proto",
    "agentstream/v1/rag.proto",
    "agentstream/v1/task.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // Imports are included, so reflection can describe google.protobuf types too.
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("agentstream_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // Smaller response batches than tonic's default: they bound what a
    // stream whose client stops reading holds (src/server/transport/codec.rs).
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .codec_path("crate::server::transport::codec::BoundedCodec")
        .compile_fds(fds)?;
    Ok(())
}
