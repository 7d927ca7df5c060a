//! A full or unwritable disk under the document index (issue 14, finding
//! 6): the ingestion fails with a clear error that names no file of the
//! server, leaves nothing behind, and the index takes writes again as soon
//! as the disk allows, also after a restart.
//!
//! Two ways to make the disk refuse:
//! - a test disk ([`disk`]) whose writes past a capacity fail with the
//!   kernel's `ENOSPC`, and which can hold a commit to leave on disk what a
//!   server killed just before its commit leaves;
//! - the real kernel refusing a directory: `chmod` when the tests do not run
//!   as root, `chattr +i` (immutable) when they do (root ignores
//!   permissions). Where neither works, that test says so and passes.

mod common;
#[path = "common/disk.rs"]
mod disk;

use std::{path::Path, process::Command};

use agentstream::pb;
use common::TestServer;
use disk::TestDisk;
use tonic::Code;

fn document(id: &str, text: String) -> pb::Document {
    pb::Document {
        id: id.into(),
        title: format!("Title of {id}"),
        text,
        ..Default::default()
    }
}

/// `count` documents of about `bytes` each, ids `prefix-N`.
fn documents(prefix: &str, count: usize, bytes: usize) -> Vec<pb::Document> {
    (0..count)
        .map(|i| {
            let mut text = String::new();
            let mut k = 0usize;
            while text.len() < bytes {
                // Distinct words, so that the index grows with the text.
                text.push_str(&format!("word{i}x{k} streams tokens. "));
                k += 1;
            }
            document(&format!("{prefix}-{i}"), text)
        })
        .collect()
}

/// A server whose document index is on `disk`.
async fn start_on(disk: &TestDisk, data_dir: tempfile::TempDir) -> TestServer {
    disk.serve(data_dir, |config| {
        config.shutdown_grace = std::time::Duration::from_millis(100);
    })
    .await
}

/// Ingests `documents` and returns the task's last event.
async fn ingest(server: &TestServer, documents: Vec<pb::Document>) -> pb::TaskEvent {
    let task = server.start_ingestion(documents).await;
    let events = server.watch_to_end(&task.task_id).await;
    events.last().expect("a terminal event").clone()
}

/// A server on a test disk, seeded with three committed documents: the
/// server, its disk and the files of that commit.
async fn seeded() -> (TestServer, TestDisk, Vec<String>) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let disk = TestDisk::open(&data_dir.path().join("index"));
    let server = start_on(&disk, data_dir).await;
    let seeded = ingest(&server, documents("seed", 3, 2_000)).await;
    assert_eq!(seeded.state(), pb::TaskState::Succeeded, "{seeded:?}");
    let committed = disk.files();
    (server, disk, committed)
}

/// The error a client sees names none of the server's files.
fn assert_names_no_file(message: &str, data_dir: &Path) {
    let dir = data_dir.to_string_lossy();
    assert!(!message.contains(dir.as_ref()), "a path leaked: {message}");
    for leak in [".idx", ".store", ".json", "/index", "IoError", "Os {"] {
        assert!(!message.contains(leak), "`{leak}` leaked: {message}");
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_ingestion_cleanly_and_the_index_takes_writes_again() {
    let (server, disk, committed) = seeded().await;

    // Room for a small ingestion, not for a large one.
    disk.set_capacity(Some(disk.used() + (64 << 10)));
    let failed = ingest(&server, documents("big", 20, 50_000)).await;
    assert_eq!(failed.state(), pb::TaskState::Failed, "{failed:?}");
    assert!(failed.error.contains("disk is full"), "{}", failed.error);
    assert!(failed.error.contains("unchanged"), "{}", failed.error);
    assert_names_no_file(&failed.error, server.data_dir.path());
    // What the failed ingestion wrote is gone: the files are those of the
    // last commit, and its space is free again.
    assert_eq!(disk.files(), committed, "files left behind");
    let small = ingest(&server, documents("small", 2, 6_000)).await;
    assert_eq!(small.state(), pb::TaskState::Succeeded, "{small:?}");
    let mut ids = server.document_ids().await;
    ids.sort();
    assert_eq!(
        ids,
        ["seed-0", "seed-1", "seed-2", "small-0", "small-1"],
        "the failed ingestion changed the index"
    );

    // Not a byte to spare: a deletion cannot commit either, and says why
    // (RESOURCE_EXHAUSTED over gRPC, 507 over HTTP).
    disk.set_capacity(Some(disk.used()));
    let refused = server.delete_document("seed-0").await.expect_err("no room");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("disk is full"), "{refused:?}");
    assert_names_no_file(refused.message(), server.data_dir.path());
    let response = server.delete("/v1/documents/seed-1").await;
    assert_eq!(response.status().as_u16(), 507);
    let body: serde_json::Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    assert_names_no_file(
        body["error"]["message"].as_str().expect("message"),
        server.data_dir.path(),
    );

    disk.set_capacity(None);
    server
        .delete_document("seed-0")
        .await
        .expect("deleted once there is room");
    assert!(!server.document_ids().await.contains(&"seed-0".to_owned()));
}

#[tokio::test]
async fn what_a_server_killed_before_its_commit_left_is_deleted_at_start() {
    let (server, disk, committed) = seeded().await;

    // The ingestion's segments are on disk, its commit held: copying the
    // directory now gives what `kill -9` at this moment leaves.
    let hold = disk.hold();
    let task = server.start_ingestion(documents("big", 10, 30_000)).await;
    disk.until_held().await;
    let crashed = tempfile::tempdir().expect("temp dir");
    let crashed_index = crashed.path().join("index");
    std::fs::create_dir_all(&crashed_index).expect("dir");
    let mut committed_bytes = 0;
    for name in disk.files() {
        let from = server.data_dir.path().join("index").join(&name);
        std::fs::copy(&from, crashed_index.join(&name)).expect("copy");
        if committed.contains(&name) {
            committed_bytes += std::fs::metadata(&from).expect("size").len();
        }
    }
    let orphans = disk.files().len() - committed.len();
    assert!(orphans > 0, "the held ingestion wrote no segment file");
    hold.release();
    let ended = server.watch_to_end(&task.task_id).await;
    assert_eq!(
        ended.last().map(|e| e.state()),
        Some(pb::TaskState::Succeeded)
    );
    server.stop().await;

    // The new server's disk has room for its committed files and a small
    // ingestion, not for the orphans too.
    let disk = TestDisk::open(&crashed_index);
    disk.set_capacity(Some(committed_bytes + (64 << 10)));
    let server = start_on(&disk, crashed).await;
    assert_eq!(disk.files(), committed, "leftovers survived the start");
    let mut ids = server.document_ids().await;
    ids.sort();
    assert_eq!(ids, ["seed-0", "seed-1", "seed-2"]);
    let small = ingest(&server, documents("small", 2, 6_000)).await;
    assert_eq!(small.state(), pb::TaskState::Succeeded, "{small:?}");
}

/// Makes `dir` refuse new files for real, if this process can: `chmod`
/// works for other users than root; root needs the immutable attribute.
/// Returns how to undo it, or `None` when writes cannot be refused here.
fn deny_writes(dir: &Path) -> Option<Box<dyn FnOnce()>> {
    use std::os::unix::fs::PermissionsExt;

    let probe = dir.join("probe-write");
    let refused = || std::fs::write(&probe, b"x").is_err() || std::fs::remove_file(&probe).is_err();
    let mode = std::fs::metadata(dir).expect("dir").permissions().mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let restore_mode = move |dir: &Path| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod back")
    };
    if refused() {
        let dir = dir.to_path_buf();
        return Some(Box::new(move || restore_mode(&dir)));
    }
    restore_mode(dir);
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if chattr("+i") {
        if refused() {
            let dir = dir.to_path_buf();
            return Some(Box::new(move || {
                assert!(
                    Command::new("chattr")
                        .arg("-i")
                        .arg(&dir)
                        .status()
                        .is_ok_and(|s| s.success()),
                    "chattr -i"
                );
            }));
        }
        chattr("-i");
    }
    None
}

#[tokio::test]
async fn an_unwritable_index_fails_cleanly_and_takes_writes_once_writable() {
    // Beside the build, on the project's disk (tmpfs may not take chattr).
    let data_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let server =
        TestServer::start_with(|config| config.data_dir = data_dir.path().to_path_buf()).await;
    let seeded = ingest(&server, documents("seed", 2, 2_000)).await;
    assert_eq!(seeded.state(), pb::TaskState::Succeeded, "{seeded:?}");
    let index_dir = data_dir.path().join("index");
    let Some(allow_writes) = deny_writes(&index_dir) else {
        eprintln!(
            "skipped: this process cannot make a directory unwritable (neither chmod nor chattr +i refuse its writes)"
        );
        return;
    };

    let failed = ingest(&server, documents("more", 3, 5_000)).await;
    let refused = server.delete_document("seed-0").await;
    let response = server.delete("/v1/documents/seed-1").await;
    allow_writes();

    assert_eq!(failed.state(), pb::TaskState::Failed, "{failed:?}");
    assert!(
        failed.error.contains("cannot write its document index"),
        "{}",
        failed.error
    );
    assert_names_no_file(&failed.error, data_dir.path());
    let refused = refused.expect_err("unwritable");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_names_no_file(refused.message(), data_dir.path());
    assert_eq!(response.status().as_u16(), 503);

    // Writable again: the next ingestion commits, and nothing of the
    // failed one is left.
    let more = ingest(&server, documents("more", 3, 5_000)).await;
    assert_eq!(more.state(), pb::TaskState::Succeeded, "{more:?}");
    let mut ids = server.document_ids().await;
    ids.sort();
    assert_eq!(ids, ["more-0", "more-1", "more-2", "seed-0", "seed-1"]);
    server.delete_document("more-0").await.expect("delete");
}
