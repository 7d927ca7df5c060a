//! The ceiling: a minimal tonic server for `ChatService/StreamChat` with no
//! logic. It answers every call with `max_tokens` chunks and one closing
//! chunk, exactly the messages agentstream's `synthetic` model sends (same
//! id length, model name, words and finish chunk, so the same bytes on the
//! wire), built by a hand-written stream: no validation, tokenizer, span,
//! deadline, metrics or adapter stack. Pacing, when asked for, follows the
//! same fixed schedule as the built-in models (token k at start + k x delay).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use agentstream::pb::{self, chat_service_server::ChatService};
use futures::Stream;
use tokio::time::{Instant, Sleep};
use tonic::{Request, Response, Status};

use crate::BenchResult;

/// Options of `baseline`.
#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// Delay between two tokens (`0`: as fast as possible).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    token_delay: Duration,
    /// Runtime worker threads (0: one per available CPU, like
    /// `#[tokio::main]` and agentstream).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The synthetic model's words (a copy of `llm::mock`, same order), so the
/// baseline's chunks have the same sizes.
pub const WORDS: [&str; 32] = [
    " the", " stream", " token", " agent", " model", " answer", " fast", " data", " server",
    " client", " time", " first", " open", " call", " chunk", " flow", " and", " of", " to", " in",
    " is", " a", " for", " with", " we", " it", " on", " that", " each", " new", " over", ".",
];

/// The `index`-th synthetic word (same hash as the service).
pub fn word(index: usize) -> &'static str {
    let mixed = (index as u64 ^ 0x9e37_79b9).wrapping_mul(0x2545_f491_4f6c_dd1d);
    WORDS[(mixed >> 59) as usize % WORDS.len()]
}

struct Baseline {
    token_delay: Duration,
}

#[tonic::async_trait]
impl ChatService for Baseline {
    type StreamChatStream = Chunks;

    async fn stream_chat(
        &self,
        request: Request<pb::StreamChatRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let max_tokens = request.into_inner().max_tokens.max(1);
        Ok(Response::new(Chunks {
            header: Arc::new((
                "chatcmpl-0123456789abcdef0123456789abcdef".into(),
                "synthetic".into(),
            )),
            sent: 0,
            max_tokens,
            delay: self.token_delay,
            due: Instant::now(),
            sleep: None,
        }))
    }

    // The baseline measures StreamChat only.
    type ResumeStreamStream = Chunks;

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Err(Status::unimplemented("the baseline serves StreamChat only"))
    }

    async fn resume_stream(
        &self,
        _: Request<pb::ResumeStreamRequest>,
    ) -> Result<Response<Chunks>, Status> {
        Err(Status::unimplemented("the baseline serves StreamChat only"))
    }

    async fn cancel_stream(
        &self,
        _: Request<pb::CancelStreamRequest>,
    ) -> Result<Response<pb::CancelStreamResponse>, Status> {
        Err(Status::unimplemented("the baseline serves StreamChat only"))
    }
}

/// The response stream: one message per poll.
pub struct Chunks {
    header: Arc<(String, String)>,
    sent: u32,
    max_tokens: u32,
    delay: Duration,
    due: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Stream for Chunks {
    type Item = Result<pb::StreamChatResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.sent > this.max_tokens {
            return Poll::Ready(None);
        }
        let last = this.sent == this.max_tokens;
        if !this.delay.is_zero() && !last {
            let sleep = this.sleep.get_or_insert_with(|| {
                this.due += this.delay;
                Box::pin(tokio::time::sleep_until(this.due))
            });
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let (content, finish) = if last {
            (String::new(), pb::FinishReason::Length)
        } else {
            (
                word(this.sent as usize).to_owned(),
                pb::FinishReason::Unspecified,
            )
        };
        let role = if this.sent == 0 {
            pb::Role::Assistant
        } else {
            pb::Role::Unspecified
        };
        this.sent += 1;
        Poll::Ready(Some(Ok(pb::StreamChatResponse {
            id: this.header.0.clone(),
            created: 1_700_000_000,
            model: this.header.1.clone(),
            choices: vec![pb::ChatChoice {
                index: 0,
                delta: Some(pb::ChatDelta {
                    role: role as i32,
                    content,
                    ..Default::default()
                }),
                finish_reason: finish as i32,
            }],
            usage: None,
            sequence: u64::from(this.sent),
            stream_id: String::new(),
        })))
    }
}

/// Serves until killed.
pub async fn serve(args: BaselineArgs) -> BenchResult<()> {
    let service = pb::chat_service_server::ChatServiceServer::new(Baseline {
        token_delay: args.token_delay,
    });
    eprintln!("baseline listening on {}", args.listen);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(args.listen)
        .await
        .map_err(|e| e.to_string())
}
