//! Compiles `proto/` with protox (no system `protoc`), generates the tonic
//! services and writes the file descriptor set that server reflection serves.
//! pbjson generates the proto3 JSON mapping of every message (serde), which
//! the HTTP edge speaks; the well-known types come from pbjson-types, which
//! carry that mapping too, except Timestamp, which is the crate's own
//! (`src/pb/timestamp.rs`: pbjson's writes `+00:00` where the mapping says `Z`).

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
    let descriptors = fds.encode_to_vec();
    fs::write(out_dir.join("agentstream_descriptor.bin"), &descriptors)?;
    // Smaller response batches than tonic's default: they bound what a
    // stream whose client stops reading holds (src/server/transport/codec.rs).
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .codec_path("crate::server::transport::codec::BoundedCodec")
        .compile_well_known_types(true)
        // Timestamps have their own type, for the mapping's exact JSON form
        // (see src/pb/timestamp.rs); the other well-known types are pbjson's.
        .extern_path(".google.protobuf.Timestamp", "crate::pb::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    chat_server(&out_dir);
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".agentstream"])?;
    Ok(())
}

/// ChatService's server as agentstream serves it: the generated one's
/// routes and messages, except that its streams send
/// `crate::pb::StreamChatResponseOut` (same bytes on the wire, see
/// `src/pb/chunk.rs`). The generated `chat_service_server` stays in `pb`
/// for anyone who serves the generated types.
fn chat_server(out_dir: &std::path::Path) {
    use tonic_build::manual::{Method, Service};
    const CODEC: &str = "crate::server::transport::codec::BoundedCodec";
    let method = |name: &str, route: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::pb::{input}"))
            .output_type(format!("crate::pb::{output}"))
            .codec_path(CODEC)
    };
    let service = Service::builder()
        .name("ChatService")
        .package("agentstream.v1")
        .method(
            method(
                "stream_chat",
                "StreamChat",
                "StreamChatRequest",
                "StreamChatResponseOut",
            )
            .server_streaming()
            .build(),
        )
        .method(
            method(
                "list_models",
                "ListModels",
                "ListModelsRequest",
                "ListModelsResponse",
            )
            .build(),
        )
        .method(
            method(
                "resume_stream",
                "ResumeStream",
                "ResumeStreamRequest",
                "StreamChatResponseOut",
            )
            .server_streaming()
            .build(),
        )
        .method(
            method(
                "cancel_stream",
                "CancelStream",
                "CancelStreamRequest",
                "CancelStreamResponse",
            )
            .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .out_dir(out_dir)
        .compile(&[service]);
}
