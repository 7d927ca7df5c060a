//! ChatService through a real tonic client.

mod common;

use agentstream::pb::{self, StreamChatRequest};
use common::TestServer;
use futures::StreamExt;

fn ask(question: &str) -> StreamChatRequest {
    StreamChatRequest {
        messages: vec![pb::ChatMessage {
            role: pb::Role::User as i32,
            content: question.into(),
            name: String::new(),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn echo_streams_a_reply_that_restates_the_question() {
    let server = TestServer::start().await;
    let mut stream = server
        .chat()
        .stream_chat(ask("What is async?"))
        .await
        .expect("call")
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in chunk.expect("chunk").choices {
            text.push_str(&choice.delta.expect("delta").content);
        }
    }
    assert!(text.contains("What is async?"), "{text}");
}
