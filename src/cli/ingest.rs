//! `agentstream ingest PATH...`: sends Markdown and text files to the index
//! and shows the ingestion tasks' progress until they end.
//!
//! Directories are read recursively (hidden entries skipped) for `.md`,
//! `.markdown` and `.txt` files; a file named explicitly is read whatever
//! its extension. Each file becomes one document whose id is its path as
//! given (so ingesting the same path again replaces it), whose title is its
//! first Markdown heading (or its file name) and whose source is its path.
//! Documents go in requests of at most `--batch` documents and 24 MiB; each
//! request is one task, watched with TaskService.WatchTask.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::{CliError, ClientArgs, Conn, interrupted};
use crate::pb::{
    self, rag_service_client::RagServiceClient, task_service_client::TaskServiceClient,
};

/// Extensions read when walking a directory.
const EXTENSIONS: [&str; 3] = ["md", "markdown", "txt"];
/// Largest file sent, in bytes (the server's per-document limit).
const MAX_FILE_BYTES: u64 = 4 << 20;
/// Most bytes per request, under the server's 32 MiB limit.
const MAX_BATCH_BYTES: usize = 24 << 20;

#[derive(Debug, Args)]
pub(super) struct IngestArgs {
    /// Files, or directories to read recursively.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Most documents per request (1 to 1000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    #[command(flatten)]
    client: ClientArgs,
}

pub(super) async fn run(args: IngestArgs) -> Result<(), CliError> {
    let files = collect_files(&args.paths)?;
    let documents = read_documents(&files);
    if documents.is_empty() {
        return Err(CliError::Input("no Markdown or text file to ingest".into()));
    }
    let total = documents.len();
    let channel = args.client.connect().await?;
    let bar = progress_bar(total as u64);
    let work = ingest_all(
        channel,
        batches(documents, args.batch as usize, MAX_BATCH_BYTES),
        &bar,
    );
    let result = tokio::select! {
        result = work => result,
        () = interrupted() => Err(CliError::Cancelled),
    };
    match &result {
        Ok(()) => {
            bar.finish_with_message(format!("ingested {total} documents"));
            // The bar draws only on a terminal; the outcome is always printed.
            println!(
                "ingested {total} documents from {} files in {:.1} s",
                files.len(),
                bar.elapsed().as_secs_f64()
            );
        }
        Err(CliError::Cancelled) => bar.abandon_with_message(
            "stopped watching; the ingestion task goes on (TaskService.CancelTask stops it)",
        ),
        Err(error) => bar.abandon_with_message(error.to_string()),
    }
    result
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} documents  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

async fn ingest_all(
    channel: Conn,
    batches: Vec<Vec<pb::Document>>,
    bar: &ProgressBar,
) -> Result<(), CliError> {
    let mut rag = RagServiceClient::new(channel.clone())
        .max_encoding_message_size(MAX_BATCH_BYTES + (8 << 20));
    let mut tasks = TaskServiceClient::new(channel);
    let mut done = 0u64;
    for batch in batches {
        let count = batch.len() as u64;
        let task = rag
            .ingest_documents(pb::IngestDocumentsRequest { documents: batch })
            .await?
            .into_inner()
            .task
            .ok_or_else(|| CliError::Task("the server returned no task".into()))?;
        watch(&mut tasks, &task.task_id, |event| {
            let step = u64::from(event.step).min(count);
            bar.set_position(done + step);
            bar.set_message(event.message.clone());
        })
        .await?;
        done += count;
        bar.set_position(done);
    }
    Ok(())
}

/// Follows a task until its terminal event; Ok when it succeeded.
async fn watch(
    tasks: &mut TaskServiceClient<Conn>,
    task_id: &str,
    mut on_event: impl FnMut(&pb::TaskEvent),
) -> Result<(), CliError> {
    let mut events = tasks
        .watch_task(pb::WatchTaskRequest {
            task_id: task_id.to_owned(),
            after_sequence: 0,
        })
        .await?
        .into_inner();
    while let Some(response) = events.next().await {
        let Some(event) = response?.event else {
            continue;
        };
        on_event(&event);
        match pb::TaskState::try_from(event.state) {
            Ok(pb::TaskState::Succeeded) => return Ok(()),
            Ok(pb::TaskState::Failed) => {
                return Err(CliError::Task(format!(
                    "task {task_id} failed: {}",
                    event.error
                )));
            }
            Ok(pb::TaskState::Cancelled) => {
                return Err(CliError::Task(format!("task {task_id} was cancelled")));
            }
            _ => {}
        }
    }
    Err(CliError::Task(format!(
        "task {task_id}: the watch ended before the task"
    )))
}

/// The files to read: explicit files as given, directories walked.
fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::Input(format!("{}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if has_text_extension(&path) {
            files.push(path);
        }
    }
    Ok(())
}

fn has_text_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Reads each file into a document; files that cannot be sent are skipped
/// with a warning.
fn read_documents(files: &[PathBuf]) -> Vec<pb::Document> {
    let mut documents = Vec::with_capacity(files.len());
    for file in files {
        match read_document(file) {
            Ok(doc) => documents.push(doc),
            Err(why) => eprintln!("skipping {}: {why}", file.display()),
        }
    }
    documents
}

fn read_document(file: &Path) -> Result<pb::Document, String> {
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!("{size} bytes; at most {MAX_FILE_BYTES}"));
    }
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    if text.trim().is_empty() {
        return Err("empty".into());
    }
    let id = document_id(file);
    let title = title_of(&text).unwrap_or_else(|| {
        file.file_name()
            .map_or_else(|| id.clone(), |n| n.to_string_lossy().into_owned())
    });
    let metadata = HashMap::from([("path".to_owned(), id.clone())]);
    Ok(pb::Document {
        id: id.clone(),
        title,
        text,
        source: id,
        metadata,
    })
}

/// The id of a file: its path as given, with `/` separators and no `./`.
fn document_id(file: &Path) -> String {
    let id = file.to_string_lossy().replace('\\', "/");
    id.trim_start_matches("./").to_owned()
}

/// The first Markdown heading of `text`.
fn title_of(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Groups documents into requests of at most `max_count` documents and
/// (unless one document alone is larger) `max_bytes` of text.
fn batches(
    documents: Vec<pb::Document>,
    max_count: usize,
    max_bytes: usize,
) -> Vec<Vec<pb::Document>> {
    let mut out: Vec<Vec<pb::Document>> = Vec::new();
    let mut bytes = 0;
    for doc in documents {
        let size = doc.text.len() + doc.title.len() + doc.id.len() * 3;
        let full = out
            .last()
            .is_none_or(|b| b.len() >= max_count.max(1) || bytes + size > max_bytes);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(batch) = out.last_mut() {
            batch.push(doc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text_len: usize) -> pb::Document {
        pb::Document {
            text: "x".repeat(text_len),
            ..Default::default()
        }
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let sizes = |b: &Vec<Vec<pb::Document>>| b.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            sizes(&batches((0..5).map(|_| doc(1)).collect(), 2, 100)),
            [2, 2, 1]
        );
        assert_eq!(
            sizes(&batches((0..5).map(|_| doc(40)).collect(), 10, 100)),
            [2, 2, 1]
        );
        assert_eq!(sizes(&batches(vec![doc(500), doc(1)], 10, 100)), [1, 1]);
        assert!(batches(Vec::new(), 10, 100).is_empty());
    }

    #[test]
    fn titles_come_from_the_first_heading() {
        assert_eq!(
            title_of("intro\n## Usage\n# Other").as_deref(),
            Some("Usage")
        );
        assert_eq!(title_of("no heading"), None);
        assert_eq!(document_id(Path::new("./docs/rag.md")), "docs/rag.md");
    }

    #[test]
    fn directories_are_walked_for_text_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/.hidden")).expect("dirs");
        for (path, body) in [
            ("a.md", "# A\ntext"),
            ("sub/b.txt", "b"),
            ("sub/c.rs", "fn main() {}"),
            ("sub/.hidden/d.md", "d"),
        ] {
            std::fs::write(root.join(path), body).expect("write");
        }
        let files = collect_files(&[root.to_path_buf()]).expect("walk");
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(root).expect("under root"))
            .collect();
        assert_eq!(names, [Path::new("a.md"), Path::new("sub/b.txt")]);
        let docs = read_documents(&files);
        assert_eq!(docs[0].title, "A");
        assert_eq!(docs[1].title, "b.txt");
    }
}
