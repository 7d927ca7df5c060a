//! Tasks, documents and RAG answers over HTTP, through a real HTTP client
//! against a server on 127.0.0.1:0: the proto3 JSON bodies, the task event
//! stream with `Last-Event-ID` resume and its `end` event, and the RAG
//! answer events.

mod common;

use std::time::Duration;

use common::{TestServer, bad_param, http_client, http_url, json_of, sse::Events};
use futures::StreamExt;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

async fn start_demo(server: &TestServer, spec: Value) -> Value {
    let response = server.post("/v1/tasks", &json!({"demo": spec})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    let task = json_of(response).await["task"].clone();
    assert_eq!(
        location,
        format!("/v1/tasks/{}", task["taskId"].as_str().expect("id"))
    );
    assert_eq!(task["kind"], "demo");
    task
}

/// One task or answer event: its name, its `id:` and its JSON data.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    name: String,
    id: Option<u64>,
    data: Value,
}

/// Reads the events of `response` until `enough` says so or it ends.
async fn read_events(response: reqwest::Response, enough: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut stream = Events::named(response);
    let mut events = Vec::new();
    while !enough(&events) {
        match stream.next().await {
            Some(event) => events.push(Event {
                data: event.json(),
                name: event.name,
                id: event.id,
            }),
            None => break,
        }
    }
    events
}

async fn events_of(
    server: &TestServer,
    task_id: &str,
    last_event_id: Option<u64>,
) -> reqwest::Response {
    let mut request = http_client().get(http_url(server, &format!("/v1/tasks/{task_id}/events")));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last.to_string());
    }
    request.send().await.expect("events")
}

#[tokio::test]
async fn task_routes_answer_proto3_json() {
    let server = TestServer::start().await;
    let task = start_demo(&server, json!({"steps": 1000, "step_delay_ms": 500})).await;
    let id = task["taskId"].as_str().expect("id").to_owned();
    let got = json_of(server.get(&format!("/v1/tasks/{id}")).await).await;
    assert_eq!(got["task"]["taskId"], id.as_str());
    assert_eq!(got["task"]["totalSteps"], 1000);
    // The proto3 JSON form, as grpcurl prints it: RFC 3339 in UTC, `Z`.
    for field in ["createTime", "updateTime"] {
        let time = got["task"][field].as_str().expect("RFC 3339");
        let (date, clock) = time.split_once('T').expect("date and time");
        assert_eq!(date.len(), 10, "{time}");
        let fraction = clock.strip_suffix('Z').expect("Z-normalized");
        let digits = fraction.split_once('.').map_or(0, |(_, f)| f.len());
        assert!([0, 3, 6, 9].contains(&digits), "{time}");
    }
    let listed = json_of(server.get("/v1/tasks?page_size=10").await).await;
    assert_eq!(listed["tasks"][0]["taskId"], id.as_str());
    // Empty parameters (a form's empty inputs) are absent ones.
    let listed = json_of(server.get("/v1/tasks?page_size=&page_token=").await).await;
    assert_eq!(listed["tasks"][0]["taskId"], id.as_str());
    let cancelled = server.post_empty(&format!("/v1/tasks/{id}/cancel")).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled = json_of(cancelled).await;
    assert_eq!(cancelled["task"]["state"], "TASK_STATE_CANCELLED");

    let missing = server.get("/v1/tasks/no-such-task").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = server.get("/v1/tasks?page_size=abc").await;
    assert_eq!(bad_param(bad).await, "page_size");
    let bad = server.post("/v1/tasks", &json!({})).await;
    assert_eq!(bad_param(bad).await, "spec");
}

#[tokio::test]
async fn a_task_stream_is_named_events_then_end() {
    let server = TestServer::start().await;
    let task = start_demo(&server, json!({"steps": 4, "step_delay_ms": 1})).await;
    let id = task["taskId"].as_str().expect("id");
    let events = read_events(events_of(&server, id, None).await, |_| false).await;
    let end = events.last().expect("events");
    assert_eq!(
        end,
        &Event {
            name: "end".into(),
            id: None,
            data: json!({})
        }
    );
    let events = &events[..events.len() - 1];
    let sequences: Vec<u64> = events.iter().map(|e| e.id.expect("id")).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    for event in events {
        let data = &event.data["event"];
        assert_eq!(data["taskId"], id);
        assert_eq!(data["sequence"], event.id.expect("id").to_string());
        let state = data["state"].as_str().expect("state");
        assert_eq!(
            event.name,
            state.trim_start_matches("TASK_STATE_").to_lowercase()
        );
    }
    assert_eq!(events.last().expect("terminal").name, "succeeded");
    assert_eq!(
        events.last().expect("terminal").data["event"]["percent"],
        100.0
    );
}

#[tokio::test]
async fn last_event_id_resumes_without_gap_or_duplicate() {
    let server = TestServer::start().await;
    let task = start_demo(&server, json!({"steps": 10, "step_delay_ms": 20})).await;
    let id = task["taskId"].as_str().expect("id");
    let first = read_events(events_of(&server, id, None).await, |e| e.len() >= 3).await;
    let last_seen = first.last().and_then(|e| e.id).expect("id");
    // The browser reconnects with the last id it saw.
    let rest = read_events(events_of(&server, id, Some(last_seen)).await, |_| false).await;
    assert_eq!(rest.last().map(|e| e.name.as_str()), Some("end"));
    let sequences: Vec<u64> = first.iter().chain(&rest).filter_map(|e| e.id).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    // ?after_sequence= does the same; Last-Event-ID wins over it.
    let url = http_url(&server, &format!("/v1/tasks/{id}/events?after_sequence=2"));
    let replay = read_events(
        http_client().get(&url).send().await.expect("events"),
        |_| false,
    )
    .await;
    assert_eq!(replay[0].id, Some(3));
    let resumed = http_client()
        .get(&url)
        .header("last-event-id", "4")
        .send()
        .await
        .expect("events");
    assert_eq!(read_events(resumed, |e| !e.is_empty()).await[0].id, Some(5));
}

#[tokio::test]
async fn leaving_the_event_stream_does_not_cancel_the_task() {
    let server = TestServer::start().await;
    let task = start_demo(&server, json!({"steps": 5, "step_delay_ms": 20})).await;
    let id = task["taskId"].as_str().expect("id");
    let first = read_events(events_of(&server, id, None).await, |e| !e.is_empty()).await;
    assert!(!first.is_empty());
    server
        .until("watcher gone", |m| m.active_streams == 0)
        .await;
    let all = read_events(events_of(&server, id, None).await, |_| false).await;
    let terminal = &all[all.len() - 2];
    assert_eq!(terminal.name, "succeeded");
}

#[tokio::test]
async fn idle_event_streams_carry_keep_alive_comments() {
    let server = TestServer::start_with(|c| c.sse_keep_alive = Duration::from_millis(50)).await;
    let task = start_demo(&server, json!({"steps": 2, "step_delay_ms": 60000})).await;
    let id = task["taskId"].as_str().expect("id");
    let mut stream = events_of(&server, id, None).await.bytes_stream();
    let mut body = String::new();
    while !body.contains(": keep-alive\n\n") {
        let bytes = stream.next().await.expect("more bytes").expect("ok");
        body.push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
    }
}

#[tokio::test]
async fn task_events_as_ndjson_are_one_watch_response_per_line() {
    let server = TestServer::start().await;
    let task = start_demo(&server, json!({"steps": 3, "step_delay_ms": 1})).await;
    let id = task["taskId"].as_str().expect("id");
    let response = http_client()
        .get(http_url(&server, &format!("/v1/tasks/{id}/events")))
        .header(header::ACCEPT, "application/x-ndjson")
        .send()
        .await
        .expect("events");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let body = response.text().await.expect("body");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(
        lines.last().expect("terminal")["event"]["state"],
        "TASK_STATE_SUCCEEDED"
    );
}

#[tokio::test]
async fn documents_are_ingested_listed_answered_from_and_deleted() {
    let server = TestServer::start().await;
    let response = server
        .post(
            "/v1/documents",
            &json!({"documents": [{"id": "intro", "title": "Intro",
            "text": "agentstream streams tokens as they are produced. Cancellation stops the work at once.",
            "source": "notes/intro.md", "metadata": {"team": "docs"}}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    let task = json_of(response).await;
    assert_eq!(task["task"]["kind"], "ingest");
    let events = read_events(server.get(&format!("{location}/events")).await, |_| false).await;
    assert_eq!(events[events.len() - 2].name, "succeeded");

    let listed = json_of(server.get("/v1/documents?page_size=5").await).await;
    assert_eq!(listed["documents"][0]["id"], "intro");
    assert_eq!(listed["documents"][0]["metadata"]["team"], "docs");

    let response = server
        .post(
            "/v1/rag/answer",
            &json!({"question": "What does cancellation stop?", "top_k": 3}),
        )
        .await;
    let events = read_events(response, |_| false).await;
    let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "retrieval_started",
            "passages_retrieved",
            "generation_started"
        ]
    );
    assert_eq!(names.last(), Some(&"done"));
    assert!(names[3..names.len() - 1].iter().all(|n| *n == "content"));
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.id, Some(i as u64 + 1));
        assert_eq!(event.data["sequence"], (i + 1).to_string());
    }
    let passages = &events[1].data["passagesRetrieved"]["passages"];
    assert_eq!(passages[0]["documentId"], "intro");

    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let deleted = server.delete("/v1/documents/intro").await;
        assert_eq!(deleted.status(), expected);
    }

    let bad = server
        .post("/v1/rag/answer", &json!({"question": "", "top_k": 99}))
        .await;
    assert_eq!(bad_param(bad).await, "question");
}

#[tokio::test]
async fn closing_a_rag_answer_stream_stops_its_generation() {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(20)).await;
    let response = server
        .post(
            "/v1/rag/answer",
            &json!({"question": "anything at all", "max_tokens": 100000, "model": "synthetic"}),
        )
        .await;
    let events = response.bytes_stream();
    let mut events = events;
    let mut body = String::new();
    while !body.contains("event: content") {
        body.push_str(
            std::str::from_utf8(&events.next().await.expect("bytes").expect("ok")).expect("UTF-8"),
        );
    }
    assert!(
        !body.contains("event: done"),
        "the answer ended before the client left"
    );
    drop(events);
    server.assert_dropped("answer dropped").await;
}
