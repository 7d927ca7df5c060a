//! Ingestions waiting for the index's one writer (issue 14): the bytes they
//! may hold are bounded (finding 8), and DeleteDocument does not wait
//! behind them for an id they will not write (finding 14).
//!
//! A running ingestion is kept running by holding its commit on a test disk
//! ([`disk`]): everything else is the real server, over gRPC and HTTP.

mod common;
#[path = "common/disk.rs"]
mod disk;

use std::time::Duration;

use agentstream::pb;
use common::{PATIENCE, TestServer};
use disk::TestDisk;
use tonic::Code;
use tonic_types::StatusExt;

/// One request of `count` documents of `bytes` bytes of text each.
fn documents(prefix: &str, count: usize, bytes: usize) -> Vec<pb::Document> {
    (0..count)
        .map(|i| pb::Document {
            id: format!("{prefix}-{i}"),
            title: String::new(),
            text: "Streams carry tokens. ".repeat(bytes / 22),
            ..Default::default()
        })
        .collect()
}

/// Bytes of documents a request holds, as the server counts them.
fn size(documents: &[pb::Document]) -> usize {
    documents
        .iter()
        .map(|d| d.id.len() + d.title.len() + d.text.len() + d.source.len())
        .sum()
}

async fn succeeds(server: &TestServer, task: &pb::Task) {
    let events = server.watch_to_end(&task.task_id).await;
    let last = events.last().expect("terminal event");
    assert_eq!(last.state(), pb::TaskState::Succeeded, "{last:?}");
}

fn http_body(documents: &[pb::Document]) -> serde_json::Value {
    let documents: Vec<serde_json::Value> = documents
        .iter()
        .map(|d| serde_json::json!({"id": d.id, "text": d.text}))
        .collect();
    serde_json::json!({ "documents": documents })
}

#[tokio::test]
async fn queued_ingestions_hold_at_most_the_limit_and_the_rest_are_told_when_to_retry() {
    let request = |prefix: &str| documents(prefix, 2, 256 << 10);
    let one = size(&request("a"));
    let data_dir = tempfile::tempdir().expect("temp dir");
    let disk = TestDisk::open(&data_dir.path().join("index"));
    // Room for three requests of this size, running or queued.
    let server = disk
        .serve(data_dir, |config| {
            config.max_queued_ingest_bytes = 3 * one;
        })
        .await;

    let hold = disk.hold();
    let running = server.start_ingestion(request("a")).await;
    disk.until_held().await;
    let queued = [
        server.start_ingestion(request("b")).await,
        server.start_ingestion(request("c")).await,
    ];

    let refused = server
        .rag()
        .ingest_documents(pb::IngestDocumentsRequest {
            documents: request("d"),
        })
        .await
        .expect_err("the queue is full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-queued-ingest-bytes"),
        "{refused:?}"
    );
    let retry = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo detail with a delay");
    assert!(retry >= Duration::from_secs(1), "{retry:?}");
    let response = server
        .post("/v1/documents", &http_body(&request("d")))
        .await;
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    // A refused request started no task.
    let tasks = server
        .tasks()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 3, "{tasks:?}");

    // The writer frees: what was queued runs, and the queue has room again.
    hold.release();
    succeeds(&server, &running).await;
    for task in &queued {
        succeeds(&server, task).await;
    }
    let retried = server.start_ingestion(request("d")).await;
    succeeds(&server, &retried).await;
}

#[tokio::test]
async fn deleting_an_id_nobody_ingests_does_not_wait_for_the_writer() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let disk = TestDisk::open(&data_dir.path().join("index"));
    let server = disk.serve(data_dir, |_| {}).await;
    server.ingest(documents("old", 1, 1_000)).await;

    let hold = disk.hold();
    let running = server.start_ingestion(documents("new", 2, 1_000)).await;
    disk.until_held().await;

    // Unknown, and not on its way: NOT_FOUND at once, over gRPC and HTTP.
    let unknown = tokio::time::timeout(PATIENCE, server.delete_document("nobody"))
        .await
        .expect("answered while the ingestion runs")
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let response = tokio::time::timeout(PATIENCE, server.delete("/v1/documents/nobody"))
        .await
        .expect("answered while the ingestion runs");
    assert_eq!(response.status().as_u16(), 404);

    // An id the running ingestion writes waits for it, then is deleted:
    // the client's order (ingest, then delete) is the index's.
    let mut rag = server.rag();
    let on_its_way = tokio::spawn(async move {
        rag.delete_document(pb::DeleteDocumentRequest {
            document_id: "new-0".into(),
        })
        .await
    });
    // And an indexed id waits for the writer as before.
    let mut rag = server.rag();
    let indexed = tokio::spawn(async move {
        rag.delete_document(pb::DeleteDocumentRequest {
            document_id: "old-0".into(),
        })
        .await
    });
    // A round trip later, both are still waiting: the writer is held.
    let again = server
        .delete_document("nobody-either")
        .await
        .expect_err("unknown");
    assert_eq!(again.code(), Code::NotFound);
    assert!(!on_its_way.is_finished() && !indexed.is_finished());

    hold.release();
    succeeds(&server, &running).await;
    on_its_way
        .await
        .expect("joined")
        .expect("deleted after its ingestion");
    indexed.await.expect("joined").expect("deleted");
    let ids: Vec<String> = server
        .rag()
        .list_documents(pb::ListDocumentsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .documents
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["new-1"]);
}
