//! `agentstream.v1.ChatService`: the wire request becomes a [`ChatDraft`],
//! the core's chunks become wire chunks.
//!
//! Tool schemas arrive as `google.protobuf.Struct` and become JSON here,
//! at the edge, so the core and the backends only ever see JSON.
//!
//! A request with `resumable` goes to the core's resumable streams
//! ([`crate::streams`]): its chunks carry the stream's id, ResumeStream
//! reads the same stream from a sequence on, CancelStream stops it. Any
//! other request keeps the direct path: chunks pulled from the backend by
//! the response, nothing kept, nothing spawned.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{Stream, StreamExt, future::Either, stream::BoxStream};
use pbjson_types::value::Kind;
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::call::{self, GrpcStream, GrpcStreamOf};
use crate::{
    chat::{
        Chat, ChatChunk, ChatChunks, ChatDraft, ChoiceDelta, CompletionHeader, MessageDraft,
        RoleDraft, ToolCallDraft, ToolChoiceDraft, ToolDraft,
    },
    error::Result,
    llm::{FinishReason, ModelInfo, Role, ToolCallDelta, ToolChoice, Usage},
    pb::{
        self, ChunkBody, ChunkHeader, StreamChatResponseOut,
        serving::chat_service_server::ChatService,
    },
    server::{Call, Calls, Method},
    streams::Follow,
};

/// The response header naming a resumable stream (gRPC metadata and HTTP).
pub(crate) const STREAM_ID_HEADER: &str = "x-agentstream-stream-id";

/// Implements `agentstream.v1.ChatService` over the core's [`Chat`].
#[derive(Clone)]
pub(crate) struct ChatApi {
    chat: Chat,
    calls: Calls,
}

impl ChatApi {
    /// The service over `chat`.
    pub(crate) fn new(chat: Chat, calls: Calls) -> Self {
        Self { chat, calls }
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    type StreamChatStream = GrpcStreamOf<ChatWire>;
    type ResumeStreamStream = GrpcStream<StreamChatResponseOut>;

    async fn stream_chat(
        &self,
        request: Request<pb::StreamChatRequest>,
    ) -> Result<Response<Self::StreamChatStream>, Status> {
        let mut call = call::start(&self.calls, Method::StreamChat, &request);
        let request = request.into_inner();
        if request.resumable {
            return self.stream_resumable(call, request).await;
        }
        let completion = match self.chat.start(draft(request)) {
            Ok(completion) => completion,
            Err(error) => return Err(call.fail(error).into()),
        };
        call.record_model(&completion.header().model);
        call.record_usage(completion.usage());
        let (header, chunks) = call.in_span(|| completion.into_chunks());
        let chunks = WireChunks {
            header: Some(wire_header(&header, "")),
            sequence: 0,
            chunks,
        };
        call::stream(call.stream_of(Either::Left(chunks)))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let call = call::start(&self.calls, Method::ListModels, &request);
        let models = self.chat.models().list();
        call::unary(
            call,
            Ok(pb::ListModelsResponse {
                models: models.into_iter().map(Into::into).collect(),
            }),
        )
    }

    async fn resume_stream(
        &self,
        request: Request<pb::ResumeStreamRequest>,
    ) -> Result<Response<Self::ResumeStreamStream>, Status> {
        let mut call = call::start(&self.calls, Method::ResumeStream, &request);
        let request = request.into_inner();
        let resumed = self
            .chat
            .streams()
            .resume(&request.stream_id, request.after_sequence, call.owner())
            .await;
        let follow = match resumed {
            Ok(follow) => follow,
            Err(error) => return Err(call.fail(error).into()),
        };
        call.record_model(&follow.header.model);
        call::stream(call.stream(follow_to_wire(follow)))
    }

    async fn cancel_stream(
        &self,
        request: Request<pb::CancelStreamRequest>,
    ) -> Result<Response<pb::CancelStreamResponse>, Status> {
        let call = call::start(&self.calls, Method::CancelStream, &request);
        let cancelled = self
            .chat
            .streams()
            .cancel(&request.into_inner().stream_id, call.owner())
            .await;
        call::unary(call, cancelled.map(|()| pb::CancelStreamResponse {}))
    }
}

impl ChatApi {
    /// StreamChat with `resumable`: the stream is started in the core and
    /// this call is its first reader; leaving it leaves the stream running.
    async fn stream_resumable(
        &self,
        mut call: Call,
        request: pb::StreamChatRequest,
    ) -> Result<Response<GrpcStreamOf<ChatWire>>, Status> {
        let started = self
            .chat
            .start_resumable(draft(request), call.owner(), call.span())
            .await;
        let follow = match started {
            Ok(follow) => follow,
            Err(error) => return Err(call.fail(error).into()),
        };
        call.record_model(&follow.header.model);
        let stream_id = follow.stream_id.clone();
        call.in_span(|| tracing::info!(%stream_id, "resumable stream started"));
        let owner = call.owner().map(str::to_owned);
        let answered = call.stream_of(Either::Right(follow_to_wire(follow).boxed()));
        if answered.is_err() {
            // Refused (drain, capacity) before anyone could read it: stop it.
            let streams = self.chat.streams();
            let _ = streams.cancel(&stream_id, owner.as_deref()).await;
        }
        let mut response = call::stream(answered)?;
        // Also in the response headers, so a client has the id before the
        // first chunk (and even if it never reads one).
        if let Ok(value) = stream_id.parse() {
            response.metadata_mut().insert(STREAM_ID_HEADER, value);
        }
        Ok(response)
    }
}

/// StreamChat's wire chunks: pulled from the core ([`WireChunks`], not
/// boxed again) or read from a resumable stream.
pub(crate) type ChatWire = Either<WireChunks, BoxStream<'static, Result<StreamChatResponseOut>>>;

/// A completion's chunks as wire messages, numbered from 1: the direct
/// path's response stream. Written out rather than a `map` so that its type
/// can be named in [`ChatWire`] and the call's stream holds it without a
/// box (one allocation a call fewer; per chunk it measured the same).
pub(crate) struct WireChunks {
    /// The call's encoded header, until its first chunk carries it.
    header: Option<Box<ChunkHeader>>,
    sequence: u64,
    chunks: ChatChunks,
}

impl Stream for WireChunks {
    type Item = Result<StreamChatResponseOut>;

    // With the core's `ChatChunks::poll_next` and `to_wire` inlined here,
    // a chunk goes from the model's event to the wire message without being
    // stored and reloaded in between: the profile showed most of this
    // function's time in reloading those copies (unaligned 16-byte loads
    // of values just written field by field, which the CPU cannot forward).
    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(chunk) = ready!(Pin::new(&mut this.chunks).poll_next(cx)) else {
            return Poll::Ready(None);
        };
        this.sequence = this.sequence.saturating_add(1);
        Poll::Ready(Some(
            chunk.map(|chunk| to_wire(this.header.take(), this.sequence, chunk)),
        ))
    }
}

/// The wire chunks of a resumable stream's reader: each with its sequence
/// and the stream's id.
fn follow_to_wire(
    follow: Follow,
) -> impl Stream<Item = Result<StreamChatResponseOut>> + Send + 'static {
    let Follow {
        stream_id,
        header,
        chunks,
    } = follow;
    let mut header = Some(wire_header(&header, &stream_id));
    chunks.map(move |kept| kept.map(|kept| to_wire(header.take(), kept.sequence, kept.chunk)))
}

/// The encoded fields every chunk of a call repeats.
fn wire_header(header: &CompletionHeader, stream_id: &str) -> Box<ChunkHeader> {
    Box::new(ChunkHeader::new(
        &header.id,
        header.created,
        &header.model,
        stream_id,
    ))
}

impl From<ModelInfo> for pb::Model {
    fn from(model: ModelInfo) -> Self {
        pb::Model {
            id: model.id,
            owned_by: model.owned_by,
            created: model.created,
        }
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
        tools: raw.tools.into_iter().map(tool).collect(),
        tool_choice: raw.tool_choice.and_then(tool_choice),
        parallel_tool_calls: raw.parallel_tool_calls,
    }
}

fn tool(t: pb::Tool) -> ToolDraft {
    let function = t.function.unwrap_or_default();
    ToolDraft {
        kind: t.r#type,
        name: function.name,
        description: function.description,
        parameters: function.parameters.map(struct_to_json),
    }
}

/// The tool choice; `None` when the oneof is unset or the mode unspecified.
fn tool_choice(choice: pb::ToolChoice) -> Option<ToolChoiceDraft> {
    use pb::tool_choice::Choice;
    Some(match choice.choice? {
        Choice::FunctionName(name) => ToolChoiceDraft::Known(ToolChoice::Function(name)),
        Choice::Mode(mode) => match pb::ToolChoiceMode::try_from(mode) {
            Ok(pb::ToolChoiceMode::Unspecified) => return None,
            Ok(pb::ToolChoiceMode::Auto) => ToolChoiceDraft::Known(ToolChoice::Auto),
            Ok(pb::ToolChoiceMode::None) => ToolChoiceDraft::Known(ToolChoice::None),
            Ok(pb::ToolChoiceMode::Required) => ToolChoiceDraft::Known(ToolChoice::Required),
            Err(_) => ToolChoiceDraft::Unknown(mode.to_string()),
        },
    })
}

/// A `google.protobuf.Struct` as the JSON object it stands for. Its depth
/// is bounded by prost's decoding recursion limit.
fn struct_to_json(s: pbjson_types::Struct) -> Value {
    Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: pbjson_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

/// A Struct number (always a double) as JSON: whole numbers as integers,
/// so a schema's `"minimum": 1` stays `1`; NaN and infinities (which JSON
/// cannot hold) as null.
fn number_to_json(n: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() < EXACT {
        // Exact: a whole number below 2^53 in magnitude.
        #[allow(clippy::cast_possible_truncation)]
        return Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
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
        tool_calls: m.tool_calls.into_iter().map(tool_call).collect(),
        tool_call_id: m.tool_call_id,
    }
}

fn tool_call(c: pb::ToolCall) -> ToolCallDraft {
    let function = c.function.unwrap_or_default();
    ToolCallDraft {
        id: c.id,
        kind: c.r#type,
        name: function.name,
        arguments: function.arguments,
    }
}

/// The wire form of one chunk (`header` with a call's first chunk).
#[inline]
fn to_wire(
    header: Option<Box<ChunkHeader>>,
    sequence: u64,
    chunk: ChatChunk,
) -> StreamChatResponseOut {
    let (choice, usage) = match chunk {
        ChatChunk::Choice {
            index,
            first,
            delta,
        } => {
            let role = if first {
                pb::Role::Assistant
            } else {
                pb::Role::Unspecified
            };
            let mut wire = pb::ChatDelta {
                role: role as i32,
                ..Default::default()
            };
            let mut finish_reason = pb::FinishReason::Unspecified;
            match delta {
                ChoiceDelta::Content(text) => wire.content = text,
                ChoiceDelta::Reasoning(text) => wire.reasoning = text,
                ChoiceDelta::Refusal(text) => wire.refusal = text,
                ChoiceDelta::ToolCall(call) => wire.tool_calls = vec![(*call).into()],
                ChoiceDelta::Finished(reason) => finish_reason = reason.into(),
            }
            let choice = pb::ChatChoice {
                index,
                delta: Some(wire),
                finish_reason: finish_reason as i32,
            };
            (Some(choice), None)
        }
        ChatChunk::Usage(usage) => (None, Some(usage.into())),
    };
    StreamChatResponseOut {
        header,
        body: ChunkBody {
            choice,
            usage,
            sequence,
        },
    }
}

impl From<ToolCallDelta> for pb::ToolCallDelta {
    fn from(call: ToolCallDelta) -> Self {
        let kind = if call.is_first() { "function" } else { "" };
        pb::ToolCallDelta {
            index: call.index,
            id: call.id,
            r#type: kind.to_owned(),
            function: Some(pb::FunctionCallDelta {
                name: call.name,
                arguments: call.arguments,
            }),
        }
    }
}

impl From<FinishReason> for pb::FinishReason {
    fn from(reason: FinishReason) -> Self {
        match reason {
            FinishReason::Stop => pb::FinishReason::Stop,
            FinishReason::Length => pb::FinishReason::Length,
            FinishReason::ToolCalls => pb::FinishReason::ToolCalls,
            FinishReason::ContentFilter => pb::FinishReason::ContentFilter,
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
