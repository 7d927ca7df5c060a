//! ChatService through a real tonic client against a server on 127.0.0.1:0.

mod common;

use std::time::Duration;

use agentstream::{
    pb::{self, StreamChatRequest, StreamChatResponse},
    tokenizer::Tokenizer,
};
use common::{TestServer, ask, bad_request_fields, drain, drain_ok, endless, take, text_of, user};
use futures::StreamExt;
use tonic::{Code, Status};

/// Every chunk of a call that ends OK.
async fn collect(server: &TestServer, request: StreamChatRequest) -> Vec<StreamChatResponse> {
    drain_ok(&mut server.stream_chat(request).await).await
}

fn finish_reasons(chunks: &[StreamChatResponse], index: u32) -> Vec<i32> {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| c.index == index)
        .map(|c| c.finish_reason)
        .collect()
}

/// The finish reason on the last chunk of choice 0.
fn last_finish(chunks: &[StreamChatResponse]) -> Option<i32> {
    finish_reasons(chunks, 0).last().copied()
}

async fn expect_status(server: &TestServer, request: StreamChatRequest) -> Status {
    match server.chat().stream_chat(request).await {
        Err(status) => status,
        Ok(response) => match drain(&mut response.into_inner()).await {
            (_, Err(status)) => status,
            (_, Ok(())) => panic!("call succeeded"),
        },
    }
}

/// Asserts INVALID_ARGUMENT whose BadRequest names `field`.
async fn expect_violation(server: &TestServer, request: StreamChatRequest, field: &str) {
    let status = expect_status(server, request).await;
    assert_eq!(bad_request_fields(&status), [field], "{status:?}");
}

#[tokio::test]
async fn echo_restates_the_question_token_by_token() {
    let server = TestServer::start().await;
    let chunks = collect(&server, ask("What is async programming?")).await;
    let text = text_of(&chunks, 0);
    assert!(text.contains("What is async programming?"), "{text}");
    let content_chunks = chunks
        .iter()
        .filter(|c| !text_of(std::slice::from_ref(c), 0).is_empty())
        .count();
    assert!(content_chunks > 10, "streamed in {content_chunks} chunks");
}

#[tokio::test]
async fn chinese_and_emoji_round_trip_exactly() {
    let server = TestServer::start().await;
    for question in [
        "什么是异步编程？",
        "流式传输🦀🎉👩‍💻 naïve café",
        "日本語とEnglishの混在テキスト",
    ] {
        let chunks = collect(&server, ask(question)).await;
        let text = text_of(&chunks, 0);
        assert!(text.contains(question), "{question:?} not in {text:?}");
        // Multi-token characters must have been grouped, never split (a split
        // character would not even decode as a protobuf string).
        let pieces: Vec<_> = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter_map(|c| c.delta.as_ref())
            .collect();
        assert!(pieces.len() > 5);
    }
}

#[tokio::test]
async fn chunks_share_id_created_and_model_with_role_first_and_finish_last() {
    let server = TestServer::start().await;
    let chunks = collect(&server, ask("hello")).await;
    let first = &chunks[0];
    assert!(
        first.id.starts_with("chatcmpl-") && first.id.len() > 12,
        "{}",
        first.id
    );
    assert!(first.created > 1_700_000_000);
    for chunk in &chunks {
        assert_eq!(
            (chunk.id.as_str(), chunk.created, chunk.model.as_str()),
            (first.id.as_str(), first.created, "echo")
        );
        assert_eq!(chunk.choices.len(), 1);
        assert!(chunk.usage.is_none());
    }
    let roles: Vec<_> = chunks
        .iter()
        .map(|c| c.choices[0].delta.as_ref().map_or(0, |d| d.role))
        .collect();
    assert_eq!(roles[0], pb::Role::Assistant as i32);
    assert!(
        roles[1..]
            .iter()
            .all(|&r| r == pb::Role::Unspecified as i32)
    );
    let reasons = finish_reasons(&chunks, 0);
    let (last, rest) = reasons.split_last().expect("chunks");
    assert_eq!(*last, pb::FinishReason::Stop as i32);
    assert!(
        rest.iter()
            .all(|&r| r == pb::FinishReason::Unspecified as i32)
    );

    let other = collect(&server, ask("hello")).await;
    assert_ne!(other[0].id, first.id, "every call gets its own id");
}

#[tokio::test]
async fn the_default_model_can_be_named_and_unknown_models_are_not_found() {
    let server = TestServer::start().await;
    let named = collect(
        &server,
        StreamChatRequest {
            model: "echo".into(),
            ..ask("hi")
        },
    )
    .await;
    let default = collect(&server, ask("hi")).await;
    assert_eq!(text_of(&named, 0), text_of(&default, 0));

    let status = expect_status(
        &server,
        StreamChatRequest {
            model: "gpt-17".into(),
            ..ask("hi")
        },
    )
    .await;
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("gpt-17") && status.message().contains("synthetic"),
        "{status:?}"
    );
}

#[tokio::test]
async fn synthetic_produces_exactly_max_tokens_and_finishes_with_length() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::ZERO).await;
    let request = StreamChatRequest {
        max_tokens: 300,
        include_usage: true,
        ..endless(1)
    };
    let chunks = collect(&server, request).await;
    let usage = chunks.last().and_then(|c| c.usage).expect("usage chunk");
    assert_eq!(usage.completion_tokens, 300);
    let tokens = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| c.delta.as_ref().is_some_and(|d| !d.content.is_empty()))
        .count();
    assert_eq!(tokens, 300, "one chunk per synthetic token");
    assert_eq!(last_finish(&chunks), Some(pb::FinishReason::Length as i32));
}

#[tokio::test]
async fn echo_cut_short_by_max_tokens_finishes_with_length() {
    let server = TestServer::start().await;
    let full = text_of(&collect(&server, ask("hello there")).await, 0);
    let chunks = collect(
        &server,
        StreamChatRequest {
            max_tokens: 4,
            include_usage: true,
            ..ask("hello there")
        },
    )
    .await;
    let text = text_of(&chunks, 0);
    assert!(
        full.starts_with(&text) && text.len() < full.len(),
        "{text:?}"
    );
    assert_eq!(Tokenizer::cl100k().count(&text), 4);
    assert_eq!(common::completion_tokens(&chunks), Some(4));
    assert_eq!(last_finish(&chunks), Some(pb::FinishReason::Length as i32));
}

#[tokio::test]
async fn usage_chunk_comes_last_only_when_asked_and_counts_cl100k_tokens() {
    let server = TestServer::start().await;
    let question = "Count my tokens, 请";
    let without = collect(&server, ask(question)).await;
    assert!(without.iter().all(|c| c.usage.is_none()));

    let chunks = collect(
        &server,
        StreamChatRequest {
            include_usage: true,
            n: 2,
            ..ask(question)
        },
    )
    .await;
    let (last, rest) = chunks.split_last().expect("chunks");
    assert!(last.choices.is_empty());
    assert!(
        rest.iter()
            .all(|c| c.usage.is_none() && c.choices.len() == 1)
    );
    let usage = last.usage.expect("usage");
    let tokenizer = Tokenizer::cl100k();
    // OpenAI's chat accounting: 3 per message + role + content, 3 to prime the reply.
    let expected_prompt = 3 + tokenizer.count("user") + tokenizer.count(question) + 3;
    assert_eq!(usage.prompt_tokens as usize, expected_prompt);
    let generated: usize = (0..2).map(|i| tokenizer.count(&text_of(&chunks, i))).sum();
    assert_eq!(usage.completion_tokens as usize, generated);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
}

#[tokio::test]
async fn stop_sequences_are_never_sent_even_across_chunks() {
    let server = TestServer::start().await;
    let full = text_of(&collect(&server, ask("alpha beta gamma")).await, 0);
    // "built-in echo model" spans several tokens, so it spans chunks.
    for stop in ["built-in echo model", "beta", "。", "zzz-not-there"] {
        let request = StreamChatRequest {
            stop: vec![stop.into(), "qqqq".into()],
            ..ask("alpha beta gamma")
        };
        let chunks = collect(&server, request).await;
        let text = text_of(&chunks, 0);
        let expected = full.find(stop).map_or(full.as_str(), |at| &full[..at]);
        assert_eq!(text, expected, "stop {stop:?}");
        assert!(!text.contains(stop));
        assert_eq!(last_finish(&chunks), Some(pb::FinishReason::Stop as i32));
    }
}

#[tokio::test]
async fn n_choices_are_generated_concurrently_and_interleave() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(2)).await;
    let chunks = collect(
        &server,
        StreamChatRequest {
            n: 3,
            ..ask("three at once")
        },
    )
    .await;
    let order: Vec<u32> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .map(|c| c.index)
        .collect();
    for i in 0..3 {
        assert!(text_of(&chunks, i).contains("three at once"));
        let reasons = finish_reasons(&chunks, i);
        assert_eq!(
            reasons.iter().filter(|&&r| r != 0).count(),
            1,
            "one finish per choice"
        );
        let first = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .find(|c| c.index == i)
            .expect("choice");
        assert_eq!(
            first.delta.as_ref().map(|d| d.role),
            Some(pb::Role::Assistant as i32)
        );
    }
    // Concurrent, not one after another: choice 2 starts before choice 0 ends.
    let first_of_2 = order.iter().position(|&i| i == 2).expect("choice 2");
    let last_of_0 = order.iter().rposition(|&i| i == 0).expect("choice 0");
    assert!(first_of_2 < last_of_0, "{order:?}");
}

#[tokio::test]
async fn every_limit_is_checked_with_a_bad_request_detail() {
    let server = TestServer::start_with(|c| {
        c.max_request_bytes = 1000;
        c.max_tokens_limit = 5000;
    })
    .await;
    let base = || ask("hi");
    let cases: Vec<(StreamChatRequest, &str)> = vec![
        (
            StreamChatRequest {
                messages: vec![],
                ..base()
            },
            "messages",
        ),
        (
            StreamChatRequest {
                messages: vec![user("x"); 257],
                ..base()
            },
            "messages",
        ),
        (
            StreamChatRequest {
                messages: vec![user(&"x".repeat(600)), user(&"y".repeat(401))],
                ..base()
            },
            "messages",
        ),
        (
            StreamChatRequest {
                messages: vec![pb::ChatMessage {
                    role: 42,
                    ..user("x")
                }],
                ..base()
            },
            "messages[0].role",
        ),
        (
            StreamChatRequest {
                messages: vec![
                    user("a"),
                    pb::ChatMessage {
                        name: "n".repeat(65),
                        ..user("x")
                    },
                ],
                ..base()
            },
            "messages[1].name",
        ),
        (
            StreamChatRequest {
                model: "m".repeat(257),
                ..base()
            },
            "model",
        ),
        (
            StreamChatRequest {
                max_tokens: 5001,
                ..base()
            },
            "max_tokens",
        ),
        (
            StreamChatRequest {
                temperature: Some(2.01),
                ..base()
            },
            "temperature",
        ),
        (
            StreamChatRequest {
                temperature: Some(-0.1),
                ..base()
            },
            "temperature",
        ),
        (
            StreamChatRequest {
                stop: vec!["a".into(); 5],
                ..base()
            },
            "stop",
        ),
        (
            StreamChatRequest {
                stop: vec!["ok".into(), String::new()],
                ..base()
            },
            "stop[1]",
        ),
        (
            StreamChatRequest {
                stop: vec!["s".repeat(65)],
                ..base()
            },
            "stop[0]",
        ),
        (StreamChatRequest { n: 9, ..base() }, "n"),
    ];
    for (request, field) in cases {
        expect_violation(&server, request, field).await;
    }
    // The limits themselves are accepted.
    let at_limits = StreamChatRequest {
        messages: vec![user(&"x".repeat(1000))],
        max_tokens: 5000,
        temperature: Some(2.0),
        stop: vec!["s".repeat(64), "a".into(), "b".into(), "c".into()],
        n: 8,
        model: "echo".into(),
        ..base()
    };
    assert!(!collect(&server, at_limits).await.is_empty());
    assert_eq!(server.metrics().live_generations, 0);
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let server = TestServer::start().await;
    let mut request = tonic::Request::new(ask("hi"));
    request
        .metadata_mut()
        .insert("x-request-id", "my-trace-123".parse().expect("ascii"));
    let response = server.chat().stream_chat(request).await.expect("call");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("my-trace-123")
    );

    let response = server.chat().stream_chat(ask("hi")).await.expect("call");
    let generated = response
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("generated id");
    assert_eq!(generated.len(), 36, "{generated}");

    // Errors carry it too.
    let mut request = tonic::Request::new(StreamChatRequest { n: 99, ..ask("hi") });
    request
        .metadata_mut()
        .insert("x-request-id", "bad-one".parse().expect("ascii"));
    let status = server
        .chat()
        .stream_chat(request)
        .await
        .expect_err("invalid");
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("bad-one")
    );
}

#[tokio::test]
async fn dropping_the_call_stops_generation_at_once() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let mut stream = server.stream_chat(endless(1)).await;
    take(&mut stream, 3).await;
    server.assert_live(1, 1);
    drop(stream);
    server.assert_dropped("generation dropped").await;
}

#[tokio::test]
async fn dropping_a_call_with_several_choices_stops_all_of_them() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let mut stream = server.stream_chat(endless(4)).await;
    take(&mut stream, 8).await;
    assert_eq!(server.metrics().live_generations, 4);
    drop(stream);
    server.assert_dropped("all choices dropped").await;
}

#[tokio::test]
async fn a_deadline_ends_the_stream_with_deadline_exceeded_and_stops_generation() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(5)).await;
    let mut request = tonic::Request::new(endless(2));
    request.set_timeout(Duration::from_millis(300));
    let mut stream = server.stream_chat(request).await;
    let mut received = 0;
    let ended = tokio::time::timeout(common::PATIENCE, async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => received += 1,
                Some(Err(status)) => break status,
                None => panic!("an endless stream ended OK"),
            }
        }
    });
    let status = ended
        .await
        .expect("the server ends the call at its deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(received > 0, "chunks flowed before the deadline");
    server.assert_dropped("generation stopped").await;
}

#[tokio::test]
async fn capacity_limit_answers_resource_exhausted() {
    let server = TestServer::start_with(|c| {
        c.max_active_streams = 1;
        c.mock_token_delay = Duration::from_millis(20);
    })
    .await;
    let mut first = server.stream_chat(endless(1)).await;
    first.next().await.expect("chunk").expect("ok");
    let status = expect_status(&server, ask("one more")).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(first);
    server
        .until("first call gone", |m| m.active_streams == 0)
        .await;
    assert!(!collect(&server, ask("now it fits")).await.is_empty());
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    // Above --max-request-bytes (1 MiB): a field violation.
    let big = ask(&"x".repeat(2 << 20));
    expect_violation(&server, big, "messages").await;
    // Above the transport's 4 MiB message limit: refused before decoding.
    let huge = ask(&"y".repeat(5 << 20));
    let status = expect_status(&server, huge).await;
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(text_of(&collect(&server, ask("still here?")).await, 0).contains("still here?"));
}
