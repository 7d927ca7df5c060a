//! Agent-grade chat over the OpenAI-compatible HTTP edge, through a real
//! HTTP client (and a WebSocket client) against a server on 127.0.0.1:0:
//! tools in OpenAI's JSON, tool calls streamed as OpenAI streams them and
//! assembled in whole completions, reasoning and refusals, the agent loop
//! against the built-in `tools` model, and an upstream whose tool-call
//! arguments arrive split anywhere.

mod common;
#[allow(dead_code)]
#[path = "upstream/fake_openai.rs"]
mod fake_openai;

use agentstream::llm::openai::UpstreamSpec;
use common::{TestServer, ws};
use fake_openai::{FakeOpenAi, data};
use futures::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]},
        "strict": true
    }})
}

fn clock_tool() -> Value {
    json!({"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}})
}

/// A request to the `tools` model asking `question` with the weather and
/// clock tools.
fn agent_request(question: &str) -> Value {
    json!({"model": "tools", "messages": [{"role": "user", "content": question}],
           "tools": [weather_tool(), clock_tool()]})
}

/// The chunks of a streamed completion as SSE, checking it ends with
/// `[DONE]`.
async fn sse_chunks(server: &TestServer, mut body: Value) -> Vec<Value> {
    body["stream"] = json!(true);
    let response = server.post_completion(&body, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    let mut events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("a data event"))
        .collect();
    assert_eq!(events.pop(), Some("[DONE]"), "{text}");
    events
        .into_iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect()
}

/// A whole (`stream: false`) completion.
async fn whole(server: &TestServer, body: &Value) -> Value {
    let response = server.post_completion(body, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

/// One tool call as a client assembles it from the deltas.
#[derive(Debug, Clone, PartialEq)]
struct Assembled {
    index: u64,
    id: String,
    name: String,
    arguments: String,
    /// Deltas after the first.
    fragments: usize,
}

/// The deltas of choice 0, checked against OpenAI's rules: the first delta
/// of each call has `index`, `id`, `type: "function"` and `function.name`
/// (and `function.arguments`, maybe empty); later ones only `index` and
/// `function.arguments`. Returns the calls assembled, by index.
fn assemble(chunks: &[Value]) -> Vec<Assembled> {
    let mut calls: Vec<Assembled> = Vec::new();
    for delta in chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == 0)
        .flat_map(|c| {
            c["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
    {
        let index = delta["index"].as_u64().expect("index");
        let arguments = delta["function"]["arguments"].as_str().expect("arguments");
        match calls.iter_mut().find(|c| c.index == index) {
            None => {
                assert_eq!(delta["type"], "function", "{delta}");
                calls.push(Assembled {
                    index,
                    id: delta["id"].as_str().expect("id on the first delta").into(),
                    name: delta["function"]["name"].as_str().expect("name").into(),
                    arguments: arguments.into(),
                    fragments: 0,
                });
            }
            Some(call) => {
                let keys: Vec<&String> = delta.as_object().expect("object").keys().collect();
                assert_eq!(keys, ["function", "index"], "{delta}");
                assert_eq!(
                    delta["function"].as_object().expect("function").len(),
                    1,
                    "{delta}"
                );
                call.arguments.push_str(arguments);
                call.fragments += 1;
            }
        }
    }
    calls.sort_by_key(|c| c.index);
    calls
}

/// The concatenated `field` of the deltas of choice 0.
fn joined(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == 0)
        .filter_map(|c| c["delta"][field].as_str().map(str::to_owned))
        .collect()
}

fn finish_reasons(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .map(|c| c["finish_reason"].clone())
        .filter(|r| !r.is_null())
        .collect()
}

#[tokio::test]
async fn the_agent_loop_runs_over_sse_against_the_tools_model() {
    let server = TestServer::start().await;
    let question = "What is the weather in Zürich?";
    let mut request = agent_request(question);
    request["stream_options"] = json!({"include_usage": true});
    let chunks = sse_chunks(&server, request.clone()).await;

    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(
        first.get("content").is_some_and(Value::is_null),
        "content is null beside a tool call: {first}"
    );
    let calls = assemble(&chunks);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert!(call.id.starts_with("call_"), "{call:?}");
    assert_eq!(call.name, "get_weather");
    assert!(
        call.fragments > 3,
        "arguments arrive in fragments: {call:?}"
    );
    let arguments: Value = serde_json::from_str(&call.arguments).expect("JSON arguments");
    assert_eq!(arguments, json!({"city": question, "days": 0}));
    assert_eq!(joined(&chunks, "content"), "");
    assert_eq!(finish_reasons(&chunks), [json!("tool_calls")]);
    let usage = &chunks.last().expect("chunks")["usage"];
    assert!(usage["completion_tokens"].as_u64().expect("usage") >= call.fragments as u64);

    // The client runs the tool and sends its result, as the SDKs do: the
    // assistant turn with `content: null` and the calls, then a tool message.
    request["messages"]
        .as_array_mut()
        .expect("messages")
        .extend([
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}]}),
            json!({"role": "tool", "tool_call_id": call.id,
                   "content": [{"type": "text", "text": "18 °C and sunny"}]}),
        ]);
    let answer = sse_chunks(&server, request).await;
    assert!(assemble(&answer).is_empty());
    let text = joined(&answer, "content");
    assert!(text.contains("get_weather returned"), "{text}");
    assert!(text.contains("18 °C and sunny"), "{text}");
    assert_eq!(finish_reasons(&answer), [json!("stop")]);
}

#[tokio::test]
async fn a_whole_completion_assembles_parallel_calls_with_null_content() {
    let server = TestServer::start().await;
    let request = agent_request("weather and clock, please");
    let streamed = assemble(&sse_chunks(&server, request.clone()).await);
    assert_eq!(
        streamed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["get_weather", "clock"]
    );

    let completion = whole(&server, &request).await;
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert!(message["content"].is_null(), "{message}");
    assert!(message["refusal"].is_null(), "{message}");
    let calls = message["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 2, "{message}");
    for (call, streamed) in calls.iter().zip(&streamed) {
        assert!(call["id"].as_str().expect("id").starts_with("call_"));
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], streamed.name.as_str());
        // Deterministic: the same arguments as the streamed call's.
        assert_eq!(call["function"]["arguments"], streamed.arguments.as_str());
    }
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert!(completion["usage"]["completion_tokens"].as_u64() > Some(0));

    // parallel_tool_calls: false and tool_choice pick as in gRPC.
    let mut one = request.clone();
    one["parallel_tool_calls"] = json!(false);
    let calls = &whole(&server, &one).await["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls.as_array().map(Vec::len), Some(1));
    let mut named = agent_request("no tool named here");
    named["tool_choice"] = json!({"type": "function", "function": {"name": "clock"}});
    let calls = &whole(&server, &named).await["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "clock");
    let mut none = request;
    none["tool_choice"] = json!("none");
    let message = &whole(&server, &none).await["choices"][0]["message"];
    assert!(message.get("tool_calls").is_none(), "{message}");
    assert!(message["content"].as_str().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn ndjson_and_websocket_carry_tool_calls_and_text_plain_only_content() {
    let server = TestServer::start().await;
    let mut request = agent_request("weather?");
    request["stream"] = json!(true);

    let response = server
        .post_completion(&request, Some("application/x-ndjson"))
        .await;
    let body = response.text().await.expect("body");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let calls = assemble(&lines);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "get_weather");
    assert_eq!(finish_reasons(&lines), [json!("tool_calls")]);

    let response = server.post_completion(&request, Some("text/plain")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "");

    let mut socket = ws::connect(&server).await;
    socket.send(ws::chat("a1", request)).await.expect("send");
    let mut chunks = Vec::new();
    for message in ws::until_end_of(&mut socket, "a1").await {
        match message["type"].as_str() {
            Some("chunk") => chunks.push(message["chunk"].clone()),
            Some("done") => {}
            other => panic!("{other:?}: {message}"),
        }
    }
    assert_eq!(assemble(&chunks).len(), 1);
    assert_eq!(finish_reasons(&chunks), [json!("tool_calls")]);
}

#[tokio::test]
async fn bad_tools_are_400_naming_openai_s_param() {
    let server = TestServer::start().await;
    let cases = [
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice.function.name",
        ),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (json!({"tool_choice": 7}), "tool_choice"),
        (
            json!({"tool_choice": {"type": "allowed_tools"}}),
            "tool_choice.type",
        ),
        (
            json!({"tools": [weather_tool(), weather_tool()]}),
            "tools[1].function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}),
            "tools[0].function.parameters",
        ),
        (json!({"tools": {"not": "a list"}}), "tools"),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "messages[0].tool_calls",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "messages[0].tool_calls[0].id",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "function": {"name": "f", "arguments": {"an": "object"}}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"max_completion_tokens": 1_000_000_000}),
            "max_completion_tokens",
        ),
    ];
    for (patch, param) in cases {
        let mut body = agent_request("weather?");
        for (key, value) in patch.as_object().expect("patch") {
            body[key] = value.clone();
        }
        let response = server.post_completion(&body, None).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{patch}");
        let error: Value = response.json().await.expect("JSON");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["param"], param, "{patch}: {error}");
    }
}

/// An agentstream server in front of a fake upstream serving `fake-model`.
async fn behind(fake: &FakeOpenAi) -> TestServer {
    let spec = UpstreamSpec::parse(&format!("name=fake,url={},models=fake-model", fake.url()))
        .expect("spec");
    TestServer::start_with(|c| c.upstreams = vec![spec]).await
}

#[tokio::test]
async fn upstream_tool_calls_split_anywhere_arrive_whole_in_openai_json() {
    let args_a = r#"{"city": "Zürich 🌍", "unit": "c"}"#;
    let args_b = r#"{"city": "東京"}"#;
    let d = |delta: Value, finish: Option<&str>| data(&fake_openai::delta(delta, finish));
    let frames = vec![
        d(json!({"role": "assistant", "content": null}), None),
        d(json!({"reasoning_content": "Two cities: "}), None),
        d(json!({"reasoning": "call twice 🤔"}), None),
        d(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        d(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": &args_a[..4]}}]}),
            None,
        ),
        d(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                "function": {"name": "get_weather", "arguments": &args_b[..7]}}]}),
            None,
        ),
        d(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": &args_a[4..13]}}]}),
            None,
        ),
        d(
            json!({"tool_calls": [
                {"index": 0, "function": {"arguments": &args_a[13..]}},
                {"index": 1, "function": {"arguments": &args_b[7..]}}]}),
            None,
        ),
        d(json!({}), Some("tool_calls")),
        data(&fake_openai::usage(20, 30)),
        data("[DONE]"),
    ];
    // Cut every 5 bytes: inside events, JSON tokens and UTF-8 characters;
    // the same script for the streamed and the whole completion.
    let fake = FakeOpenAi::start(vec![fake_openai::split_every(&frames, 5)], &[]).await;
    let server = behind(&fake).await;
    let request = json!({"model": "fake-model", "tools": [weather_tool()], "tool_choice": "required",
        "parallel_tool_calls": true,
        "messages": [{"role": "user", "content": "Weather in Zürich and Tokyo?"}]});

    let chunks = sse_chunks(&server, request.clone()).await;
    let calls: Vec<(String, String, String)> = assemble(&chunks)
        .into_iter()
        .map(|c| (c.id, c.name, c.arguments))
        .collect();
    let expected = [
        (
            "call_a".to_owned(),
            "get_weather".to_owned(),
            args_a.to_owned(),
        ),
        (
            "call_b".to_owned(),
            "get_weather".to_owned(),
            args_b.to_owned(),
        ),
    ];
    assert_eq!(calls, expected);
    assert_eq!(
        joined(&chunks, "reasoning_content"),
        "Two cities: call twice 🤔"
    );
    assert_eq!(finish_reasons(&chunks), [json!("tool_calls")]);
    let sent = &fake.bodies()[0];
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(sent["parallel_tool_calls"], true);

    let completion = whole(&server, &request).await;
    let message = &completion["choices"][0]["message"];
    assert!(message["content"].is_null(), "{message}");
    assert_eq!(message["reasoning_content"], "Two cities: call twice 🤔");
    let whole_calls: Vec<(String, String, String)> = message["tool_calls"]
        .as_array()
        .expect("tool_calls")
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "function");
            let text = |v: &Value| v.as_str().expect("string").to_owned();
            (
                text(&c["id"]),
                text(&c["function"]["name"]),
                text(&c["function"]["arguments"]),
            )
        })
        .collect();
    assert_eq!(whole_calls, expected);
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(completion["usage"]["completion_tokens"], 30);
}

#[tokio::test]
async fn refusals_and_content_filter_reach_http_clients() {
    let d = |delta: Value, finish: Option<&str>| data(&fake_openai::delta(delta, finish));
    let frames = vec![
        d(json!({"role": "assistant", "refusal": "I can"}), None),
        d(json!({"refusal": "not help with that."}), None),
        d(json!({}), Some("content_filter")),
        data("[DONE]"),
    ];
    let fake = FakeOpenAi::start(vec![fake_openai::stream(frames)], &[]).await;
    let server = behind(&fake).await;
    let request = json!({"model": "fake-model", "messages": [{"role": "user", "content": "bad"}]});

    let chunks = sse_chunks(&server, request.clone()).await;
    assert_eq!(joined(&chunks, "refusal"), "I cannot help with that.");
    assert_eq!(joined(&chunks, "content"), "");
    assert_eq!(finish_reasons(&chunks), [json!("content_filter")]);

    let completion = whole(&server, &request).await;
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "content_filter");
    assert!(choice["message"]["content"].is_null(), "{choice}");
    assert_eq!(choice["message"]["refusal"], "I cannot help with that.");
}
