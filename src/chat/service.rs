//! The ChatService edge: wire request in, wire chunks out.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{ChatChunk, ChatLimits, ChatRequest, chat_chunks};
use crate::{
    error::Result,
    llm::{Backend, FinishReason, Models, Usage},
    pb::{self, chat_service_server::ChatService},
    server::{CallStream, Calls},
};

/// Implements `agentstream.v1.ChatService`.
#[derive(Clone)]
pub struct ChatApi {
    models: Arc<Models>,
    limits: ChatLimits,
    calls: Calls,
}

impl ChatApi {
    /// A chat service answering with `models` within `limits`.
    pub fn new(models: Arc<Models>, limits: ChatLimits, calls: Calls) -> Self {
        Self {
            models,
            limits,
            calls,
        }
    }

    fn prepare(&self, raw: pb::StreamChatRequest) -> Result<(ChatRequest, Arc<dyn Backend>)> {
        let mut request = ChatRequest::validate(raw, &self.limits)?;
        let (model, backend) = self.models.resolve(&request.generation.model)?;
        request.generation.model = model;
        Ok((request, backend))
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    type StreamChatStream = CallStream<pb::StreamChatResponse>;

    async fn stream_chat(
        &self,
        request: Request<pb::StreamChatRequest>,
    ) -> Result<Response<Self::StreamChatStream>, Status> {
        let call = self
            .calls
            .start("agentstream.v1.ChatService/StreamChat", &request);
        let (request, backend) = match self.prepare(request.into_inner()) {
            Ok(prepared) => prepared,
            Err(error) => return Err(call.fail(error)),
        };
        call.record_model(&request.generation.model);
        let header = ChunkHeader::new(&request.generation.model);
        let quiet = !backend.logs_while_streaming();
        let events = backend.generate(request.generation);
        let chunks = chat_chunks(events, request.include_usage)
            .map(move |chunk| chunk.map(|chunk| header.to_wire(chunk)));
        if quiet {
            call.stream_quiet(chunks)
        } else {
            call.stream(chunks)
        }
    }
}

/// What every chunk of one call repeats.
struct ChunkHeader {
    id: String,
    created: i64,
    model: String,
}

impl ChunkHeader {
    fn new(model: &str) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created,
            model: model.to_owned(),
        }
    }

    fn to_wire(&self, chunk: ChatChunk) -> pb::StreamChatResponse {
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
            id: self.id.clone(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
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
