//! Agent-grade chat through a real tonic client: the built-in `tools`
//! model calls tools with streamed arguments and answers from their
//! results; tool definitions are validated; models are listed.

mod common;

use agentstream::pb::{self, StreamChatRequest, StreamChatResponse};
use common::{TestServer, bad_request_fields, drain_ok, text_of, to_struct_value, user};

fn tool(name: &str, schema: serde_json::Value) -> pb::Tool {
    let fields = schema
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), to_struct_value(v)))
        .collect();
    pb::Tool {
        r#type: "function".into(),
        function: Some(pb::FunctionDefinition {
            name: name.into(),
            description: format!("The {name} tool"),
            parameters: Some(pbjson_types::Struct { fields }),
        }),
    }
}

fn weather() -> pb::Tool {
    tool(
        "get_weather",
        serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]
        }),
    )
}

async fn chunks_of(server: &TestServer, request: StreamChatRequest) -> Vec<StreamChatResponse> {
    let mut stream = server.stream_chat(request).await;
    drain_ok(&mut stream).await
}

/// (index, id, type, name, joined arguments, argument fragments) per call.
fn calls(chunks: &[StreamChatResponse]) -> Vec<(u32, String, String, String, String, usize)> {
    let mut calls: Vec<(u32, String, String, String, String, usize)> = Vec::new();
    for d in chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.as_ref())
        .flat_map(|d| &d.tool_calls)
    {
        let f = d.function.clone().unwrap_or_default();
        if !d.id.is_empty() {
            assert_eq!(d.index as usize, calls.len(), "calls begin in index order");
            calls.push((
                d.index,
                d.id.clone(),
                d.r#type.clone(),
                f.name,
                f.arguments,
                0,
            ));
        } else {
            assert!(f.name.is_empty(), "only the first delta names the call");
            let call = &mut calls[d.index as usize];
            call.4.push_str(&f.arguments);
            call.5 += 1;
        }
    }
    calls
}

fn finish(chunks: &[StreamChatResponse]) -> Vec<i32> {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .map(|c| c.finish_reason)
        .filter(|&r| r != pb::FinishReason::Unspecified as i32)
        .collect()
}

#[tokio::test]
async fn the_tools_model_calls_a_tool_then_answers_from_its_result() {
    let server = TestServer::start().await;
    let question = "What is the weather in Paris?";
    let mut request = StreamChatRequest {
        model: "tools".into(),
        messages: vec![user(question)],
        tools: vec![
            weather(),
            tool("send_email", serde_json::json!({"type": "object"})),
        ],
        include_usage: true,
        ..Default::default()
    };
    let first = chunks_of(&server, request.clone()).await;
    let made = calls(&first);
    assert_eq!(made.len(), 1, "{made:?}");
    let (_, id, kind, name, arguments, fragments) = &made[0];
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!((kind.as_str(), name.as_str()), ("function", "get_weather"));
    assert!(*fragments > 3, "arguments stream in fragments: {fragments}");
    let parsed: serde_json::Value = serde_json::from_str(arguments).expect("JSON arguments");
    assert_eq!(parsed, serde_json::json!({"city": question, "days": 0}));
    assert_eq!(finish(&first), [pb::FinishReason::ToolCalls as i32]);
    let usage = first.last().and_then(|c| c.usage).expect("usage");
    assert!(usage.completion_tokens >= *fragments as u32);

    // The client runs the tool and sends the result back.
    request.messages.push(pb::ChatMessage {
        role: pb::Role::Assistant as i32,
        tool_calls: vec![pb::ToolCall {
            id: id.clone(),
            r#type: "function".into(),
            function: Some(pb::FunctionCall {
                name: name.clone(),
                arguments: arguments.clone(),
            }),
        }],
        ..Default::default()
    });
    request.messages.push(pb::ChatMessage {
        role: pb::Role::Tool as i32,
        content: "18 °C and sunny".into(),
        tool_call_id: id.clone(),
        ..Default::default()
    });
    let second = chunks_of(&server, request).await;
    assert!(calls(&second).is_empty());
    let answer = text_of(&second, 0);
    assert!(answer.contains("get_weather"), "{answer}");
    assert!(answer.contains("18 °C and sunny"), "{answer}");
    assert_eq!(finish(&second), [pb::FinishReason::Stop as i32]);
}

#[tokio::test]
async fn tool_choice_picks_and_parallel_calls_interleave_by_index() {
    let server = TestServer::start().await;
    let clock = tool(
        "world_clock",
        serde_json::json!({"type": "object", "properties": {"zone": {"type": "string"}}}),
    );
    let request = StreamChatRequest {
        model: "tools".into(),
        messages: vec![user("weather and clock, please")],
        tools: vec![weather(), clock.clone()],
        ..Default::default()
    };
    let both = calls(&chunks_of(&server, request.clone()).await);
    let names: Vec<_> = both.iter().map(|c| c.3.as_str()).collect();
    assert_eq!(names, ["get_weather", "world_clock"]);
    assert_ne!(both[0].1, both[1].1, "ids are unique");

    let one = StreamChatRequest {
        parallel_tool_calls: Some(false),
        ..request.clone()
    };
    assert_eq!(calls(&chunks_of(&server, one).await).len(), 1);

    let named = StreamChatRequest {
        messages: vec![user("anything")],
        tool_choice: Some(pb::ToolChoice {
            choice: Some(pb::tool_choice::Choice::FunctionName("world_clock".into())),
        }),
        ..request.clone()
    };
    let made = calls(&chunks_of(&server, named).await);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].3, "world_clock");

    let none = StreamChatRequest {
        tool_choice: Some(pb::ToolChoice {
            choice: Some(pb::tool_choice::Choice::Mode(
                pb::ToolChoiceMode::None as i32,
            )),
        }),
        ..request
    };
    let chunks = chunks_of(&server, none).await;
    assert!(calls(&chunks).is_empty());
    assert!(!text_of(&chunks, 0).is_empty());
    assert_eq!(finish(&chunks), [pb::FinishReason::Stop as i32]);
}

#[tokio::test]
async fn bad_tools_are_invalid_arguments_naming_each_field() {
    let server = TestServer::start().await;
    let mut tools: Vec<pb::Tool> = (0..129)
        .map(|i| tool(&format!("f{i}"), serde_json::json!({"type": "object"})))
        .collect();
    tools[0].function.as_mut().expect("function").name = "no spaces".into();
    tools[1].r#type = "retrieval".into();
    let request = StreamChatRequest {
        model: "tools".into(),
        messages: vec![
            pb::ChatMessage {
                tool_calls: vec![pb::ToolCall::default()],
                ..user("x")
            },
            pb::ChatMessage {
                role: pb::Role::Tool as i32,
                tool_call_id: "i".repeat(257),
                ..user("y")
            },
        ],
        tools,
        tool_choice: Some(pb::ToolChoice {
            choice: Some(pb::tool_choice::Choice::FunctionName("missing".into())),
        }),
        ..Default::default()
    };
    let status = server
        .chat()
        .stream_chat(request)
        .await
        .expect_err("invalid");
    let fields = bad_request_fields(&status);
    for field in [
        "messages[0].tool_calls",
        "messages[0].tool_calls[0].id",
        "messages[1].tool_call_id",
        "tools",
        "tools[0].function.name",
        "tools[1].type",
        "tool_choice.function_name",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
}

#[tokio::test]
async fn list_models_lists_the_built_in_models_as_agentstream_s() {
    let server = TestServer::start().await;
    let models = server.list_models().await;
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["echo", "synthetic", "tools"]);
    assert!(
        models
            .iter()
            .all(|m| m.owned_by == "agentstream" && m.created > 0)
    );
}

#[tokio::test]
async fn chunks_count_their_sequence_and_carry_no_stream_id_unless_resumable() {
    let server = TestServer::start().await;
    let chunks = chunks_of(
        &server,
        StreamChatRequest {
            messages: vec![user("count")],
            include_usage: true,
            ..Default::default()
        },
    )
    .await;
    let sequences: Vec<u64> = chunks.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=chunks.len() as u64).collect::<Vec<_>>());
    assert!(chunks.iter().all(|c| c.stream_id.is_empty()));
}

#[tokio::test]
async fn dropping_a_call_mid_arguments_stops_the_tools_model_at_once() {
    let server = TestServer::start_with(|c| {
        c.mock_token_delay = std::time::Duration::from_millis(20);
    })
    .await;
    let request = StreamChatRequest {
        model: "tools".into(),
        messages: vec![user(&"weather ".repeat(200))],
        tools: vec![weather()],
        n: 2,
        ..Default::default()
    };
    let mut stream = server.stream_chat(request).await;
    for _ in 0..4 {
        futures::StreamExt::next(&mut stream)
            .await
            .expect("chunk")
            .expect("ok");
    }
    assert_eq!(server.metrics().live_generations, 2);
    drop(stream);
    server.assert_dropped("tool calls dropped").await;
}
