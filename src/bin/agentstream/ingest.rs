//! `agentstream ingest PATH...`: sends text files to the index and shows
//! the ingestion tasks' progress until they end.
//!
//! Directories are read recursively (hidden entries and symbolic links to
//! directories skipped) for the text formats people keep documentation in:
//! Markdown, reStructuredText, AsciiDoc and plain text ([`EXTENSIONS`];
//! `--ext` adds others). HTML is not among them: its markup and scripts would
//! be indexed as words; name such files with `--ext html` if plain text is
//! what they hold. A file named explicitly is read whatever its extension.
//!
//! Each file becomes one document whose id is its path as given (so
//! ingesting the same path again replaces it), whose title is its first
//! heading (Markdown `#`, AsciiDoc `=`, or an underlined reStructuredText
//! title; else its file name) and whose source is its path. Documents go in
//! requests of at most `--batch` documents and 24 MiB; each request is one
//! task, watched with TaskService.WatchTask.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Instant,
};

use agentstream::pb::{
    self, rag_service_client::RagServiceClient, task_service_client::TaskServiceClient,
};
use clap::Args;
use futures::StreamExt;
use tonic::transport::Channel;

use crate::{
    CliError,
    client::ClientArgs,
    interrupted,
    output::{self, plural},
    progress::Progress,
};

/// Extensions read when walking a directory.
const EXTENSIONS: [&str; 7] = ["md", "markdown", "txt", "text", "rst", "adoc", "asciidoc"];
/// Largest file sent, in bytes (the server's per-document limit).
const MAX_FILE_BYTES: u64 = 4 << 20;
/// Most bytes per request, under the server's 32 MiB limit.
const MAX_BATCH_BYTES: usize = 24 << 20;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files, or directories to read recursively.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also read files with this extension in directories (repeatable;
    /// e.g. `--ext html`).
    #[arg(long = "ext", value_name = "EXT")]
    extensions: Vec<String>,
    /// Most documents per request (1 to 1000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: IngestArgs) -> Result<(), CliError> {
    let extensions = Extensions::with(&args.extensions);
    let files = collect_files(&args.paths, &extensions)?;
    if files.is_empty() {
        return Err(CliError::Input(format!(
            "no file to ingest: directories are searched for {} files \
             (--ext adds an extension; a file named on the command line is read whatever its extension)",
            extensions.list()
        )));
    }
    let documents = read_documents(&files);
    if documents.is_empty() {
        return Err(CliError::Input(format!(
            "none of the {} could be sent (see above)",
            plural(files.len(), "file")
        )));
    }
    let total = documents.len();
    let channel = args.client.connect().await?;
    let progress = Progress::new("documents");
    let started = Instant::now();
    let mut current_task = None;
    let result = tokio::select! {
        result = ingest_all(
            channel,
            batches(documents, args.batch as usize, MAX_BATCH_BYTES),
            &progress,
            started,
            &mut current_task,
        ) => result,
        () = interrupted() => Err(CliError::Cancelled),
    };
    match result {
        Ok(()) => {
            let summary = format!(
                "ingested {} from {} in {:.1} s",
                plural(total, "document"),
                plural(files.len(), "file"),
                started.elapsed().as_secs_f64()
            );
            progress.succeed(summary.clone());
            // The bar draws only on a terminal; the outcome is always printed.
            output::line(&summary)?;
            Ok(())
        }
        Err(CliError::Cancelled) => {
            progress.stop();
            match current_task {
                Some(task_id) => Err(CliError::StoppedWatching { task_id }),
                None => Err(CliError::Cancelled),
            }
        }
        Err(error) => {
            progress.fail("FAILED");
            Err(error)
        }
    }
}

/// Sends each batch and follows its task; `current_task` names the task
/// being watched, for the message when the user stops watching.
async fn ingest_all(
    channel: Channel,
    batches: Vec<Vec<pb::Document>>,
    progress: &Progress,
    started: Instant,
    current_task: &mut Option<String>,
) -> Result<(), CliError> {
    let mut rag = RagServiceClient::new(channel.clone())
        .max_encoding_message_size(MAX_BATCH_BYTES + (8 << 20));
    let mut tasks = TaskServiceClient::new(channel);
    let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let mut done = 0u64;
    for batch in batches {
        let count = batch.len() as u64;
        let task = rag
            .ingest_documents(pb::IngestDocumentsRequest { documents: batch })
            .await?
            .into_inner()
            .task
            .ok_or_else(|| CliError::Task("the server returned no task".into()))?;
        *current_task = Some(task.task_id.clone());
        watch(&mut tasks, &task.task_id, |event| {
            let now = done + u64::from(event.step).min(count);
            progress.show(now, total, Some((now, started.elapsed())), &event.message);
        })
        .await?;
        done += count;
        progress.show(done, total, Some((done, started.elapsed())), "");
    }
    *current_task = None;
    Ok(())
}

/// Follows a task until its terminal event; Ok when it succeeded.
async fn watch(
    tasks: &mut TaskServiceClient<Channel>,
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
                    "ingestion task {task_id} failed: {}",
                    event.error
                )));
            }
            Ok(pb::TaskState::Cancelled) => {
                return Err(CliError::Task(format!(
                    "ingestion task {task_id} was cancelled"
                )));
            }
            _ => {}
        }
    }
    Err(CliError::Task(format!(
        "ingestion task {task_id}: the watch ended before the task"
    )))
}

/// The extensions read in directories: the defaults plus `--ext`.
struct Extensions(Vec<String>);

impl Extensions {
    fn with(extra: &[String]) -> Self {
        let mut all: Vec<String> = EXTENSIONS.iter().map(|e| (*e).to_owned()).collect();
        for ext in extra {
            let ext = ext.trim_start_matches('.').to_ascii_lowercase();
            if !ext.is_empty() && !all.contains(&ext) {
                all.push(ext);
            }
        }
        Self(all)
    }

    fn matches(&self, path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| self.0.iter().any(|x| x.eq_ignore_ascii_case(e)))
    }

    /// `.md, .markdown, ... or .adoc`
    fn list(&self) -> String {
        let dotted: Vec<String> = self.0.iter().map(|e| format!(".{e}")).collect();
        match dotted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => dotted.concat(),
        }
    }
}

/// The files to read: explicit files as given, directories walked.
fn collect_files(paths: &[PathBuf], extensions: &Extensions) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(path, extensions, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, extensions: &Extensions, files: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::Input(format!("{}: {e}", dir.display())))?;
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, extensions, files)?;
        } else if extensions.matches(&path) && path.is_file() {
            files.push(path);
        }
    }
    Ok(())
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

/// The first heading of `text`: a Markdown `#` or AsciiDoc `=` heading, or
/// a reStructuredText title (a line underlined with `=`, `-`, `~`, ...).
fn title_of(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.iter().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim();
        for marker in ['#', '='] {
            if let Some(rest) = trimmed.strip_prefix(marker) {
                let title = rest.trim_start_matches(marker);
                if title.starts_with(' ') && !title.trim().is_empty() {
                    return Some(title.trim().to_owned());
                }
            }
        }
        let underline = lines.get(i + 1)?;
        let is_underline = underline.len() >= trimmed.chars().count().max(3)
            && underline
                .chars()
                .next()
                .is_some_and(|c| "=-~^*+#".contains(c) && underline.chars().all(|u| u == c));
        (!trimmed.is_empty() && is_underline && !is_rule(trimmed)).then(|| trimmed.to_owned())
    })
}

/// A line made of one repeated punctuation character (an rST over-line).
fn is_rule(line: &str) -> bool {
    let mut chars = line.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_punctuation() && chars.all(|d| d == c))
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
        assert_eq!(title_of("#hashtag only"), None);
        assert_eq!(title_of("= Guide\n\n== Part").as_deref(), Some("Guide"));
        assert_eq!(
            title_of("=====\nTitle\n=====\n\ntext").as_deref(),
            Some("Title")
        );
        assert_eq!(title_of("Setup\n-----\ntext").as_deref(), Some("Setup"));
        assert_eq!(title_of("a\n-").as_deref(), None);
        assert_eq!(document_id(Path::new("./docs/rag.md")), "docs/rag.md");
    }

    #[test]
    fn directories_are_walked_for_text_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/.hidden")).expect("dirs");
        for (path, body) in [
            ("a.md", "# A\ntext"),
            ("guide.adoc", "= Guide\ntext"),
            ("page.html", "<p>x</p>"),
            ("sub/b.txt", "b"),
            ("sub/c.rs", "fn main() {}"),
            ("sub/notes.rst", "Notes\n=====\n"),
            ("sub/.hidden/d.md", "d"),
        ] {
            std::fs::write(root.join(path), body).expect("write");
        }
        let names = |extensions: &Extensions| {
            let files = collect_files(&[root.to_path_buf()], extensions).expect("walk");
            files
                .iter()
                .map(|f| f.strip_prefix(root).expect("under root").to_owned())
                .collect::<Vec<_>>()
        };
        let default = Extensions::with(&[]);
        assert_eq!(
            names(&default),
            ["a.md", "guide.adoc", "sub/b.txt", "sub/notes.rst"].map(PathBuf::from)
        );
        let with_html = Extensions::with(&[".HTML".to_owned()]);
        assert!(names(&with_html).contains(&PathBuf::from("page.html")));
        let files = collect_files(&[root.to_path_buf()], &default).expect("walk");
        let docs = read_documents(&files);
        let titles: Vec<_> = docs.iter().map(|d| d.title.as_str()).collect();
        assert_eq!(titles, ["A", "Guide", "b.txt", "Notes"]);
    }

    #[test]
    fn the_extension_list_reads_as_words() {
        assert_eq!(
            Extensions::with(&[]).list(),
            ".md, .markdown, .txt, .text, .rst, .adoc or .asciidoc"
        );
    }
}
