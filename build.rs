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
    chat_server(&fds, &out_dir)?;
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
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".agentstream"])?;
    Ok(())
}

/// ChatService's server as agentstream serves it: its methods as the
/// proto declares them, except that a `StreamChatResponse` is sent as
/// `crate::pb::StreamChatResponseOut`, with the codec that writes it (same
/// bytes on the wire, see `src/pb/chunk.rs`). The generated
/// `chat_service_server` stays in `pb` for anyone who serves the generated
/// types.
fn chat_server(
    fds: &prost_types::FileDescriptorSet,
    out_dir: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use tonic_build::manual::{Method, Service};
    let chat = fds
        .file
        .iter()
        .filter(|file| file.package() == "agentstream.v1")
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "ChatService")
        .ok_or("agentstream.v1.ChatService is not in proto/")?;
    // `.agentstream.v1.StreamChatRequest` -> `crate::pb::StreamChatRequest`
    let rust_type = |proto: &str| {
        let name = proto.trim_start_matches(".agentstream.v1.");
        let name = if name == "StreamChatResponse" {
            "StreamChatResponseOut"
        } else {
            name
        };
        format!("crate::pb::{name}")
    };
    let mut service = Service::builder()
        .name(chat.name())
        .package("agentstream.v1");
    for method in &chat.method {
        let codec = if method.output_type() == ".agentstream.v1.StreamChatResponse" {
            "crate::server::transport::codec::ChunkCodec"
        } else {
            "crate::server::transport::codec::BoundedCodec"
        };
        let mut built = Method::builder()
            .name(snake_case(method.name()))
            .route_name(method.name())
            .input_type(rust_type(method.input_type()))
            .output_type(rust_type(method.output_type()))
            .codec_path(codec);
        if method.client_streaming() {
            built = built.client_streaming();
        }
        if method.server_streaming() {
            built = built.server_streaming();
        }
        service = service.method(built.build());
    }
    tonic_build::manual::Builder::new()
        .build_client(false)
        .out_dir(out_dir)
        .compile(&[service.build()]);
    Ok(())
}

/// `StreamChat` -> `stream_chat`, as tonic names a method's function.
fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}
