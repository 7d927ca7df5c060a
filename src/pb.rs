//! The wire types and service stubs generated from `proto/agentstream/v1`.
//!
//! Generated code is included here and nowhere else, and never edited; the
//! rest of the crate converts to and from these types at the service edge.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("agentstream.v1");

/// The encoded `FileDescriptorSet` of every proto file (imports included),
/// served by reflection so grpcurl and `buf curl` need no proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("agentstream_descriptor");
