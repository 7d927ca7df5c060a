//! RagService through a real tonic client.
//!
//! Documents are ingested over the wire (IngestDocuments, then WatchTask to
//! SUCCEEDED). The index's own behaviour (batches, progress, rollback on
//! failure or cancellation) is unit-tested in `src/rag/index/`.

mod common;

use std::time::Duration;

use agentstream::{
    config::ServeConfig,
    pb::{self, stream_answer_response::Event},
    rag::{NewDocument, Unwatched},
};
use common::{TestServer, bad_request_fields, drain_ok};
use futures::StreamExt;
use tonic::Code;

fn doc(id: &str, title: &str, text: &str) -> NewDocument {
    NewDocument {
        id: id.into(),
        title: title.into(),
        text: text.into(),
        source: format!("{id}.md"),
        metadata: [("lang".to_owned(), "test".to_owned())].into(),
    }
}

/// A small corpus in English, Chinese and both.
fn corpus() -> Vec<NewDocument> {
    vec![
        doc(
            "tantivy",
            "The index",
            "Documents are split into passages.\n\nThe index uses BM25 to rank passages. \
             Retrieval returns at most top_k passages.",
        ),
        doc(
            "shutdown",
            "Shutdown",
            "On SIGTERM the server drains in-flight streams for a grace period. \
             Health reports NOT_SERVING while draining.",
        ),
        doc(
            "storage-zh",
            "存储",
            "索引保存在服务器的数据目录中。重启服务器之后，所有文档仍然可以检索。\n\n\
             删除文档以后，它不会再出现在搜索结果里。",
        ),
        doc(
            "weather-zh",
            "天气",
            "今天北京天气晴朗，气温二十度。明天可能下雨，请带伞。",
        ),
        doc(
            "mixed",
            "Mixed",
            "agentstream 使用 gRPC 流式传输聊天内容。每个 token 都会立即发送给客户端。",
        ),
    ]
}

fn to_wire(document: NewDocument) -> pb::Document {
    pb::Document {
        id: document.id,
        title: document.title,
        text: document.text,
        source: document.source,
        metadata: document.metadata.into_iter().collect(),
    }
}

/// Ingests over RPC and waits for the task to succeed.
async fn ingest(server: &TestServer, documents: Vec<NewDocument>) {
    server
        .ingest(documents.into_iter().map(to_wire).collect())
        .await;
}

/// A server on the defaults with [`corpus`] ingested.
async fn with_corpus() -> TestServer {
    let server = TestServer::start().await;
    ingest(&server, corpus()).await;
    server
}

async fn start_ingestion(server: &TestServer, documents: Vec<NewDocument>) -> pb::Task {
    server
        .start_ingestion(documents.into_iter().map(to_wire).collect())
        .await
}

fn question(text: &str) -> pb::StreamAnswerRequest {
    pb::StreamAnswerRequest {
        question: text.into(),
        ..Default::default()
    }
}

/// Every event of an answer, until the stream ends OK.
async fn answer(
    server: &TestServer,
    request: pb::StreamAnswerRequest,
) -> Vec<pb::StreamAnswerResponse> {
    let mut stream = server.stream_answer(request).await;
    drain_ok(&mut stream).await
}

fn passages(events: &[pb::StreamAnswerResponse]) -> Vec<pb::Passage> {
    events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::PassagesRetrieved(p)) => Some(p.passages.clone()),
            _ => None,
        })
        .expect("passages_retrieved event")
}

fn text(events: &[pb::StreamAnswerResponse]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Content(c)) => Some(c.text.as_str()),
            _ => None,
        })
        .collect()
}

/// The citation markers `[n]` of an answer, in order.
fn citations(answer: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find(']')
            && let Ok(n) = rest[..close].parse()
        {
            found.push(n);
        }
    }
    found
}

fn quick_shutdown(config: &mut ServeConfig) {
    config.shutdown_grace = Duration::from_millis(100);
}

#[tokio::test]
async fn events_come_in_contract_order_with_sequence_numbers() {
    let server = with_corpus().await;
    let events = answer(&server, question("How does the index rank passages?")).await;

    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as u64).collect::<Vec<_>>());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e.event.as_ref().expect("event set") {
            Event::RetrievalStarted(_) => "retrieval_started",
            Event::PassagesRetrieved(_) => "passages_retrieved",
            Event::GenerationStarted(_) => "generation_started",
            Event::Content(_) => "content",
            Event::Done(_) => "done",
        })
        .collect();
    let content = kinds.len() - 4;
    assert!(content >= 3, "the answer streams token by token: {kinds:?}");
    let mut expected = vec![
        "retrieval_started",
        "passages_retrieved",
        "generation_started",
    ];
    expected.extend(std::iter::repeat_n("content", content));
    expected.push("done");
    assert_eq!(kinds, expected);

    let Some(Event::RetrievalStarted(started)) = &events[0].event else {
        unreachable!()
    };
    assert_eq!(started.top_k, 4, "top_k 0 means 4");
    let Some(Event::GenerationStarted(generation)) = &events[2].event else {
        unreachable!()
    };
    assert_eq!(generation.model, "echo");
    let Some(Event::Done(done)) = &events[events.len() - 1].event else {
        unreachable!()
    };
    assert_eq!(done.finish_reason, pb::FinishReason::Stop as i32);
    let usage = done.usage.expect("usage");
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let found = passages(&events);
    assert_eq!(found[0].document_id, "tantivy");
    assert!(
        found.windows(2).all(|w| w[0].score >= w[1].score),
        "best first"
    );
    assert!(found[0].text.contains("BM25"), "{:?}", found[0].text);
}

#[tokio::test]
async fn citations_point_at_the_passages_returned() {
    let server = with_corpus().await;
    for q in [
        "What does the server do on SIGTERM while draining?",
        "文档删除以后还会出现在搜索结果里吗？",
    ] {
        let events = answer(&server, question(q)).await;
        let found = passages(&events);
        let answer = text(&events);
        let cited = citations(&answer);
        assert!(!cited.is_empty(), "{q}: {answer}");
        // Each quoted sentence, up to its marker, comes from the cited passage.
        let mut rest = answer.as_str();
        for n in cited {
            assert!(
                (1..=found.len()).contains(&n),
                "[{n}] of {} passages",
                found.len()
            );
            let marker = format!(" [{n}]");
            let end = rest.find(&marker).expect("marker");
            let sentence = rest[..end].trim();
            assert!(
                found[n - 1].text.contains(sentence),
                "{sentence:?} is not in passage {n}: {:?}",
                found[n - 1].text
            );
            rest = &rest[end + marker.len()..];
        }
    }
}

#[tokio::test]
async fn chinese_and_mixed_questions_retrieve_the_right_documents() {
    let server = with_corpus().await;

    let events = answer(&server, question("重启服务器以后文档还在吗？")).await;
    let found = passages(&events);
    assert_eq!(found[0].document_id, "storage-zh", "{found:?}");
    assert!(
        text(&events).contains("重启服务器之后，所有文档仍然可以检索。 [1]"),
        "{}",
        text(&events)
    );

    let events = answer(&server, question("明天北京会下雨吗")).await;
    assert_eq!(passages(&events)[0].document_id, "weather-zh");

    let events = answer(&server, question("How is chat content sent, 流式传输?")).await;
    assert_eq!(passages(&events)[0].document_id, "mixed");

    let events = answer(&server, question("每个 TOKEN 发送给谁")).await;
    assert_eq!(
        passages(&events)[0].document_id,
        "mixed",
        "English terms are case-insensitive"
    );
}

#[tokio::test]
async fn a_question_the_documents_do_not_cover_gets_no_passage() {
    let server = with_corpus().await;
    let events = answer(&server, question("Which rockets reach orbit?")).await;
    assert!(passages(&events).is_empty());
    assert_eq!(
        text(&events),
        "The indexed documents do not cover this question."
    );
    let events = answer(&server, question("火箭怎样进入轨道？")).await;
    assert!(passages(&events).is_empty());
    assert_eq!(text(&events), "已索引的文档中没有关于这个问题的内容。");
}

#[tokio::test]
async fn answers_quote_table_rows_and_the_command_a_colon_introduces() {
    let server = TestServer::start().await;
    let mut documents = corpus();
    documents.push(doc(
        "errors",
        "Upstream errors",
        "## Errors\n\n| upstream | gRPC status |\n|---|---|\n| HTTP 429 | RESOURCE_EXHAUSTED |\n\
         | HTTP 404 | FAILED_PRECONDITION |\n\nCancellation closes the upstream connection.",
    ));
    documents.push(doc(
        "threads",
        "Running tests",
        "## One at a time\n\nWhat if the tests must not run in parallel? Give them one thread:\n\n\
         ```sh\ncargo test -- --test-threads=1\n```\n\nParallel runs are faster.",
    ));
    ingest(&server, documents).await;

    let events = answer(
        &server,
        question("Which gRPC status does an upstream HTTP 429 become?"),
    )
    .await;
    let found = passages(&events);
    let n = 1 + found
        .iter()
        .position(|p| p.document_id == "errors")
        .expect("the table's passage");
    let expected = format!("upstream: HTTP 429; gRPC status: RESOURCE_EXHAUSTED [{n}]");
    assert!(text(&events).starts_with(&expected), "{}", text(&events));

    let events = answer(
        &server,
        question("How do I keep tests from running in parallel?"),
    )
    .await;
    let answer = text(&events);
    assert!(
        answer.contains("Give them one thread: `cargo test -- --test-threads=1`"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_missing_subject_is_named_in_the_questions_language() {
    let server = with_corpus().await;
    let events = answer(
        &server,
        question("How does the server drain on Kubernetes?"),
    )
    .await;
    // Passages about draining are still returned, but not quoted as an answer.
    assert!(!passages(&events).is_empty());
    assert_eq!(
        text(&events),
        "The indexed documents do not cover this question: they say nothing about \u{201c}Kubernetes\u{201d}."
    );
    let events = answer(&server, question("怎么用 Kubernetes 部署服务器？")).await;
    assert_eq!(
        text(&events),
        "已索引的文档中没有关于“Kubernetes”的内容，所以无法回答这个问题。"
    );
}

#[tokio::test]
async fn timings_come_in_microseconds_beside_milliseconds() {
    let server = with_corpus().await;
    let events = answer(&server, question("Where is the index kept?")).await;
    let (retrieved, done) = events
        .iter()
        .fold((None, None), |(r, d), e| match &e.event {
            Some(Event::PassagesRetrieved(p)) => (Some(p.clone()), d),
            Some(Event::Done(done)) => (r, Some(*done)),
            _ => (r, d),
        });
    let (retrieved, done) = (retrieved.expect("passages"), done.expect("done"));
    assert!(retrieved.retrieval_us > 0);
    assert_eq!(
        u64::from(retrieved.retrieval_ms),
        retrieved.retrieval_us / 1000
    );
    assert_eq!(done.retrieval_us, retrieved.retrieval_us);
    assert!(done.generation_us > 0);
    assert_eq!(u64::from(done.generation_ms), done.generation_us / 1000);
}

#[tokio::test]
async fn one_long_document_does_not_crowd_out_the_rest() {
    let server = TestServer::start().await;
    let long: String = (0..40)
        .map(|k| {
            format!(
                "Paragraph {k} is about backpressure and backpressure again.\n\n{}\n\n",
                "filler ".repeat(150)
            )
        })
        .collect();
    ingest(
        &server,
        vec![
            doc("long", "Long", &long),
            doc(
                "short-1",
                "Short",
                "Backpressure keeps slow clients from hurting others.",
            ),
            doc(
                "short-2",
                "Other",
                "A bounded queue is one way to apply backpressure.",
            ),
        ],
    )
    .await;
    let mut request = question("backpressure");
    request.top_k = 4;
    let found = passages(&answer(&server, request.clone()).await);
    let from_long = found.iter().filter(|p| p.document_id == "long").count();
    assert_eq!(from_long, 2, "at most two passages per document: {found:?}");
    assert_eq!(found.len(), 4);
    assert!(found.iter().all(|p| p.text.chars().count() <= 1100));
    // Once no other document has a passage to show, the cap hides nothing:
    // the long document fills the answer.
    request.top_k = 6;
    let found = passages(&answer(&server, request).await);
    assert_eq!(found.len(), 6, "{found:?}");
    assert_eq!(found.iter().filter(|p| p.document_id == "long").count(), 4);
}

#[tokio::test]
async fn reingesting_an_id_replaces_the_document() {
    let server = TestServer::start().await;
    ingest(
        &server,
        vec![doc("guide", "Old title", "The old text mentions zebras.")],
    )
    .await;
    ingest(
        &server,
        vec![doc("guide", "New title", "The new text mentions giraffes.")],
    )
    .await;

    let page = server
        .rag()
        .list_documents(pb::ListDocumentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.documents.len(), 1, "replaced, never duplicated");
    let info = &page.documents[0];
    assert_eq!(
        (info.id.as_str(), info.title.as_str()),
        ("guide", "New title")
    );
    assert_eq!(
        info.size_bytes,
        "The new text mentions giraffes.".len() as u64
    );
    assert_eq!(info.metadata.get("lang").map(String::as_str), Some("test"));
    assert!(info.ingest_time.is_some());

    assert!(passages(&answer(&server, question("zebras")).await).is_empty());
    let found = passages(&answer(&server, question("giraffes")).await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].title, "New title");
}

#[tokio::test]
async fn documents_survive_a_restart() {
    let server = TestServer::start_with(quick_shutdown).await;
    ingest(&server, corpus()).await;
    let mut assigned = doc(
        "",
        "Assigned",
        "A document without an id gets one from the server.",
    );
    assigned.metadata.clear();
    let report = server
        .server
        .documents()
        .ingest(vec![assigned], &Unwatched)
        .await
        .expect("ingest");
    let before = server.document_ids().await;
    assert_eq!(before.len(), 6);
    assert!(before.contains(&report.document_ids[0]));

    let server = server.restart().await;
    assert_eq!(server.document_ids().await, before);
    let events = answer(&server, question("索引保存在哪里？")).await;
    assert_eq!(passages(&events)[0].document_id, "storage-zh");
}

fn numbered(count: usize, word: &str) -> Vec<NewDocument> {
    (0..count)
        .map(|k| {
            doc(
                &format!("{word}-{k:03}"),
                word,
                &format!("Document {k} talks about {word}."),
            )
        })
        .collect()
}

#[tokio::test]
async fn paging_is_ordered_by_id_and_stable_under_concurrent_ingestion() {
    let server = TestServer::start().await;
    ingest(&server, numbered(7, "b")).await;
    let mut rag = server.rag();
    let mut request = pb::ListDocumentsRequest {
        page_size: 3,
        page_token: String::new(),
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = rag
            .list_documents(request.clone())
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        seen.extend(page.documents.into_iter().map(|d| d.id));
        if pages == 1 {
            // Ingested between pages: before the cursor (a-*) and after (c-*).
            ingest(&server, [numbered(2, "a"), numbered(2, "c")].concat()).await;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let mut expected: Vec<String> = numbered(7, "b").into_iter().map(|d| d.id).collect();
    expected.extend(["c-000".to_owned(), "c-001".to_owned()]);
    assert_eq!(seen, expected, "no document skipped or repeated");
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn deleting_removes_a_document_durably() {
    let server = TestServer::start_with(quick_shutdown).await;
    ingest(&server, corpus()).await;
    server.delete_document("weather-zh").await.expect("deleted");
    assert!(
        !server
            .document_ids()
            .await
            .contains(&"weather-zh".to_owned())
    );
    assert!(passages(&answer(&server, question("北京天气")).await).is_empty());

    let status = server
        .delete_document("weather-zh")
        .await
        .expect_err("already gone");
    assert_eq!(status.code(), Code::NotFound);

    let server = server.restart().await;
    assert_eq!(server.document_ids().await.len(), 4);
    assert!(passages(&answer(&server, question("北京天气")).await).is_empty());
}

#[tokio::test]
async fn every_ingest_limit_is_enforced() {
    let server = TestServer::start().await;
    let mut rag = server.rag();
    let valid = |id: &str| pb::Document {
        id: id.into(),
        text: "text".into(),
        ..Default::default()
    };

    let empty = rag
        .ingest_documents(pb::IngestDocumentsRequest::default())
        .await
        .expect_err("no documents");
    assert_eq!(bad_request_fields(&empty), ["documents"]);

    let too_many = pb::IngestDocumentsRequest {
        documents: (0..1001).map(|_| valid("")).collect(),
    };
    let status = rag
        .ingest_documents(too_many)
        .await
        .expect_err("1001 documents");
    assert_eq!(bad_request_fields(&status), ["documents"]);

    let mut bad = valid(&"i".repeat(257));
    bad.title = "t".repeat(1025);
    bad.source = "s".repeat(2049);
    bad.text = "x".repeat((4 << 20) + 1);
    bad.metadata = (0..65).map(|k| (format!("k{k}"), "v".to_owned())).collect();
    let mut blank = valid("blank");
    blank.text = "  \n ".into();
    let request = pb::IngestDocumentsRequest {
        documents: vec![bad, blank, valid("dup"), valid("dup")],
    };
    let status = rag.ingest_documents(request).await.expect_err("invalid");
    assert_eq!(
        bad_request_fields(&status),
        [
            "documents[0].id",
            "documents[0].title",
            "documents[0].text",
            "documents[0].source",
            "documents[0].metadata",
            "documents[1].text",
            "documents[3].id",
        ]
    );

    // 9 documents of 4 MiB: each fits, the request does not (32 MiB cap).
    let heavy = pb::IngestDocumentsRequest {
        documents: (0..8)
            .map(|k| pb::Document {
                id: format!("h{k}"),
                text: "x".repeat(4 << 20),
                ..Default::default()
            })
            .chain(std::iter::once(valid("h8")))
            .collect(),
    };
    let status = rag.ingest_documents(heavy).await.expect_err("too heavy");
    assert_eq!(bad_request_fields(&status), ["documents"]);

    // A valid request passes validation and starts an ingestion task.
    server.start_ingestion(vec![valid("ok")]).await;
}

#[tokio::test]
async fn cancelling_an_ingestion_task_is_all_or_nothing() {
    let server = with_corpus().await;
    let before = list_all(&server).await;
    let many: Vec<NewDocument> = (0..600)
        .map(|i| {
            doc(
                &format!("bulk-{i:04}"),
                "Bulk",
                &"Bulk text about streams. ".repeat(20),
            )
        })
        .collect();
    let task = start_ingestion(&server, many).await;
    let cancelled = server
        .tasks()
        .cancel_task(pb::CancelTaskRequest {
            task_id: task.task_id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .task
        .expect("task");
    // CancelTask answers once the work stopped; the state says what it did.
    let after = list_all(&server).await;
    match cancelled.state() {
        pb::TaskState::Cancelled => {
            assert_eq!(after, before, "a cancelled ingestion changed the index")
        }
        pb::TaskState::Succeeded => assert_eq!(after.len(), before.len() + 600),
        other => panic!("unexpected state {other:?}"),
    }
    let events = server.watch_to_end(&task.task_id).await;
    assert_eq!(events.last().map(|e| e.state()), Some(cancelled.state()));
}

/// Every document id, over every page.
async fn list_all(server: &TestServer) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .rag()
            .list_documents(pb::ListDocumentsRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .expect("list")
            .into_inner();
        ids.extend(page.documents.into_iter().map(|d| d.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn every_answer_list_and_delete_limit_is_enforced() {
    let server = TestServer::start().await;
    let mut rag = server.rag();

    let bad = pb::StreamAnswerRequest {
        question: "q".repeat((8 << 10) + 1),
        top_k: 21,
        model: "m".repeat(257),
        max_tokens: 262_145,
    };
    let status = rag.stream_answer(bad).await.expect_err("invalid");
    assert_eq!(
        bad_request_fields(&status),
        ["question", "top_k", "model", "max_tokens"]
    );
    let status = rag.stream_answer(question(" \n")).await.expect_err("blank");
    assert_eq!(bad_request_fields(&status), ["question"]);

    let mut unknown = question("anything");
    unknown.model = "gpt-17".into();
    let status = rag.stream_answer(unknown).await.expect_err("unknown model");
    assert_eq!(status.code(), Code::NotFound);

    let status = rag
        .list_documents(pb::ListDocumentsRequest {
            page_size: 1001,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad_request_fields(&status), ["page_size", "page_token"]);

    let status = rag
        .delete_document(pb::DeleteDocumentRequest::default())
        .await
        .expect_err("no id");
    assert_eq!(bad_request_fields(&status), ["document_id"]);
}

/// A corpus whose extractive answer is long enough to cancel midway.
async fn slow_server() -> TestServer {
    let server = TestServer::start_with(|c| c.mock_token_delay = Duration::from_millis(25)).await;
    ingest(
        &server,
        vec![doc(
            "long-answer",
            "Streams",
            "Streams deliver tokens as they are produced by the model in real time. \
             Streams stop at once when the client cancels the call or disconnects. \
             Streams also end at the deadline that the client set with grpc-timeout.",
        )],
    )
    .await;
    server
}

#[tokio::test]
async fn a_client_that_goes_away_stops_retrieval_and_generation() {
    let server = slow_server().await;
    let mut stream = server
        .stream_answer(question("How do streams deliver tokens and stop?"))
        .await;
    let mut content = 0;
    while content < 3 {
        let event = stream.next().await.expect("more events").expect("event");
        if matches!(event.event, Some(Event::Content(_))) {
            content += 1;
        }
    }
    assert_eq!(server.metrics().live_generations, 1);
    drop(stream);

    let stopped = server.until_no_generation("generation dropped").await;
    assert!(stopped.tokens_generated < 40, "the answer was cut short");
    server.assert_no_token_produced_meanwhile().await;
    server
        .until("stream closed", |m| m.active_streams == 0)
        .await;
}

#[tokio::test]
async fn the_deadline_ends_the_answer_and_its_work() {
    let server = slow_server().await;
    let mut request = tonic::Request::new(question("How do streams deliver tokens and stop?"));
    request.set_timeout(Duration::from_millis(300));
    let mut stream = server.stream_answer(request).await;
    let mut content = 0;
    let status = loop {
        match stream.next().await {
            Some(Ok(event)) => {
                assert!(
                    !matches!(event.event, Some(Event::Done(_))),
                    "finished before the deadline"
                );
                content += usize::from(matches!(event.event, Some(Event::Content(_))));
            }
            Some(Err(status)) => break status,
            None => panic!("ended OK before the deadline"),
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(content > 0, "content streamed before the deadline");
    server.assert_no_token_produced_meanwhile().await;
}

/// IngestDocuments end to end through the real binary, with `kill -9`
/// between ingestion and restart.
#[tokio::test]
async fn ingested_documents_survive_kill_9() {
    use std::process::{Command, Stdio};

    let data_dir = tempfile::tempdir().expect("temp dir");
    let start = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_agentstream"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server process");
        (child, format!("http://127.0.0.1:{port}"))
    };
    let connect = |url: String| async move {
        common::eventually("server accepts connections", || {
            let url = url.clone();
            async move {
                tonic::transport::Endpoint::from_shared(url)
                    .ok()?
                    .connect()
                    .await
                    .ok()
            }
        })
        .await
    };

    let (mut child, url) = start();
    let channel = connect(url).await;
    let mut rag = pb::rag_service_client::RagServiceClient::new(channel.clone());
    let documents = corpus()
        .into_iter()
        .map(|d| pb::Document {
            id: d.id,
            title: d.title,
            text: d.text,
            source: d.source,
            metadata: d.metadata.into_iter().collect(),
        })
        .collect();
    let task = rag
        .ingest_documents(pb::IngestDocumentsRequest { documents })
        .await
        .expect("ingestion starts")
        .into_inner()
        .task
        .expect("task");
    let mut watch = pb::task_service_client::TaskServiceClient::new(channel)
        .watch_task(pb::WatchTaskRequest {
            task_id: task.task_id,
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(event) = watch.next().await {
        last = event.expect("task event").event;
    }
    let last = last.expect("terminal event");
    assert_eq!(last.state, pb::TaskState::Succeeded as i32, "{last:?}");

    child.kill().expect("kill -9");
    child.wait().expect("reaped");

    let (mut child, url) = start();
    let mut rag = pb::rag_service_client::RagServiceClient::new(connect(url).await);
    let page = rag
        .list_documents(pb::ListDocumentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.documents.len(), corpus().len());
    child.kill().expect("stop");
    child.wait().expect("reaped");
}
