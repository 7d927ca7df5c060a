//! The gRPC edge: tonic services over the protocol-free core.
//!
//! Everything tonic-specific lives here: the generated service traits are
//! implemented in [`chat`], [`rag`] and [`tasks`], each converting `pb`
//! requests into the core's drafts and the core's domain types back into
//! `pb` messages; [`call`] reads request ids and `grpc-timeout` off tonic's
//! metadata; [`status`] is the one conversion of the core's error to a
//! `Status`. [`routes`] assembles the services with health and reflection;
//! the server puts the transport and its layers (request ids) around them.

pub(crate) mod call;
pub(crate) mod chat;
pub(crate) mod rag;
pub(crate) mod status;
pub(crate) mod tasks;

use tonic::{server::NamedService, service::Routes};
use tonic_health::pb::health_server::{Health, HealthServer};

pub(crate) use self::{chat::ChatApi, rag::RagApi, tasks::TaskApi};
use crate::{
    chat::Chat,
    pb::{
        self, rag_service_server::RagServiceServer,
        serving::chat_service_server::ChatServiceServer, task_service_server::TaskServiceServer,
    },
    rag::{Rag, request::MAX_MESSAGE_BYTES},
    server::Calls,
    tasks::Tasks,
};

/// The agentstream services, by their full gRPC names (health reports on
/// each of them).
pub(crate) const SERVICE_NAMES: [&str; 3] = [
    <ChatServiceServer<ChatApi> as NamedService>::NAME,
    <RagServiceServer<RagApi> as NamedService>::NAME,
    <TaskServiceServer<TaskApi> as NamedService>::NAME,
];

/// Reflection could not be built from the embedded descriptors.
pub(crate) type ReflectionError = tonic_reflection::server::Error;

/// The three agentstream services over the core, configured once for every
/// transport that serves them (the gRPC port, gRPC-Web on the HTTP port).
#[derive(Clone)]
pub(crate) struct Services {
    /// ChatService.
    pub chat: ChatServiceServer<ChatApi>,
    /// RagService.
    pub rag: RagServiceServer<RagApi>,
    /// TaskService.
    pub tasks: TaskServiceServer<TaskApi>,
}

impl Services {
    /// The services over the core's `chat`, `rag` and `tasks`.
    pub(crate) fn new(chat: Chat, rag: Rag, tasks: Tasks, calls: Calls) -> Self {
        Self {
            chat: ChatServiceServer::new(ChatApi::new(chat, calls.clone())),
            rag: RagServiceServer::new(RagApi::new(rag, calls.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            tasks: TaskServiceServer::new(TaskApi::new(tasks, calls)),
        }
    }
}

/// Every gRPC service of the server: `services`, `health` and reflection
/// (v1 and v1alpha).
pub(crate) fn routes(
    services: Services,
    health: HealthServer<impl Health>,
) -> Result<Routes, ReflectionError> {
    // google.rpc (tonic-types) is served too, so grpcurl and buf curl can
    // decode the BadRequest and RetryInfo details of error statuses.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(services.chat)
        .add_service(services.rag)
        .add_service(services.tasks))
}
