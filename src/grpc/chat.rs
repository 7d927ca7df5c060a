//! `agentstream.v1.ChatService`: the wire request becomes a [`ChatDraft`],
//! the core's chunks become wire chunks.

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::call::{self, GrpcStream};
use crate::{
    chat::{Chat, ChatChunk, ChatDraft, CompletionHeader, MessageDraft, RoleDraft},
    llm::{FinishReason, Role, Usage},
    pb::{self, chat_service_server::ChatService},
    server::{Calls, Method},
};

/// Implements `agentstream.v1.ChatService` over the core's [`Chat`].
#[derive(Clone)]
pub struct ChatApi {
    chat: Chat,
    calls: Calls,
}

impl ChatApi {
    /// The service over `chat`.
    pub fn new(chat: Chat, calls: Calls) -> Self {
        Self { chat, calls }
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    type StreamChatStream = GrpcStream<pb::StreamChatResponse>;

    async fn stream_chat(
        &self,
        request: Request<pb::StreamChatRequest>,
    ) -> Result<Response<Self::StreamChatStream>, Status> {
        let call = call::start(&self.calls, Method::StreamChat, &request);
        let completion = match self.chat.start(draft(request.into_inner())) {
            Ok(completion) => completion,
            Err(error) => return Err(call.fail(error).into()),
        };
        call.record_model(&completion.header().model);
        let (header, chunks) = call.in_span(|| completion.into_chunks());
        let chunks = chunks.map(move |chunk| chunk.map(|chunk| to_wire(&header, chunk)));
        call::stream(call.stream(chunks))
    }
}

/// The draft of a wire request.
fn draft(raw: pb::StreamChatRequest) -> ChatDraft {
    ChatDraft {
        messages: raw.messages.into_iter().map(message).collect(),
        model: raw.model,
        max_tokens: raw.max_tokens,
        temperature: raw.temperature,
        stop: raw.stop,
        n: raw.n,
        include_usage: raw.include_usage,
    }
}

fn message(m: pb::ChatMessage) -> MessageDraft {
    let role = match pb::Role::try_from(m.role) {
        Ok(pb::Role::Unspecified | pb::Role::User) => RoleDraft::Known(Role::User),
        Ok(pb::Role::System) => RoleDraft::Known(Role::System),
        Ok(pb::Role::Assistant) => RoleDraft::Known(Role::Assistant),
        Ok(pb::Role::Tool) => RoleDraft::Known(Role::Tool),
        Err(_) => RoleDraft::Unknown(m.role.to_string()),
    };
    MessageDraft {
        role,
        content: m.content,
        name: m.name,
    }
}

/// The wire form of one chunk.
fn to_wire(header: &CompletionHeader, chunk: ChatChunk) -> pb::StreamChatResponse {
    let (choices, usage) = match chunk {
        ChatChunk::Choice {
            index,
            first,
            content,
            finish_reason,
        } => {
            let role = if first {
                pb::Role::Assistant
            } else {
                pb::Role::Unspecified
            };
            let choice = pb::ChatChoice {
                index,
                delta: Some(pb::ChatDelta {
                    role: role as i32,
                    content,
                }),
                finish_reason: finish_reason.map_or(pb::FinishReason::Unspecified, Into::into)
                    as i32,
            };
            (vec![choice], None)
        }
        ChatChunk::Usage(usage) => (Vec::new(), Some(usage.into())),
    };
    pb::StreamChatResponse {
        id: header.id.clone(),
        created: header.created,
        model: header.model.clone(),
        choices,
        usage,
    }
}

impl From<FinishReason> for pb::FinishReason {
    fn from(reason: FinishReason) -> Self {
        match reason {
            FinishReason::Stop => pb::FinishReason::Stop,
            FinishReason::Length => pb::FinishReason::Length,
        }
    }
}

impl From<Usage> for pb::Usage {
    fn from(usage: Usage) -> Self {
        pb::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens(),
        }
    }
}
