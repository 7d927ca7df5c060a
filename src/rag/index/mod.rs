//! The embedded, on-disk document index (tantivy, BM25).
//!
//! One tantivy index under `<data dir>/index` holds two kinds of records,
//! told apart by the `kind` field:
//! - one *document* record per document: id, title, source, metadata, size
//!   and ingest time (what ListDocuments returns; not the text);
//! - one *passage* record per passage of its text, with the document's id,
//!   title and source copied in, so a search hit carries all it needs.
//!
//! Both carry the document id as a raw term, so replacing or deleting a
//! document is one `delete_term` that removes all of its records.
//!
//! Writes go through the single [`IndexWriter`], behind an async mutex held
//! for a whole ingestion (or deletion) by a [`WriteSession`]. An ingestion
//! adds its documents batch by batch, then commits *once*: tantivy makes a
//! commit visible and durable atomically (its `meta.json` is replaced only
//! after the new segments are synced), so a crash before the commit, a
//! failure or a cancellation (which rolls the writer back) leaves the index
//! exactly as the last commit left it. A session that is dropped without
//! committing — a panic, a dropped future — rolls back too, before the
//! writer is free again, so no half ingestion can ride on a later commit.
//!
//! The reader reloads by hand right after each commit, so a document is
//! searchable as soon as its ingestion reports success. The document records
//! are also kept in memory, ordered by id (the *catalog*), loaded from the
//! index at start and updated under the writer lock after each commit: it
//! serves ListDocuments pages keyed by id, which stay stable however many
//! ingestions run meanwhile.
//!
//! tantivy work is blocking (disk, CPU), so it runs on tokio's blocking pool.
//!
//! A disk that is full or cannot be written must not leave the index stuck:
//! segment files written by an ingestion that then failed (or by a server
//! killed mid-ingestion) are referenced by no commit, and while they stay
//! they take the very space the next ingestion needs. tantivy only deletes
//! such files when a commit succeeds, so the index deletes them itself
//! after every rollback and at start-up ([`write`]'s `roll_back`,
//! `clean_up`). Storage errors reach clients as [`Error::Storage`] (a full
//! disk is RESOURCE_EXHAUSTED, an unwritable one UNAVAILABLE) with a message
//! that names no file; the log line has the details.
//!
//! The parts: [`schema`] (the fields and the records written and read),
//! [`write`] (ingestion, deletion, the write session and its rollback),
//! [`search`] (term statistics, BM25 scoring and the ranking of passages).

mod schema;
mod search;
mod write;

use std::{
    collections::BTreeMap,
    ops::Bound,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use tantivy::{
    Directory, Index, IndexReader, ReloadPolicy, Searcher, TantivyDocument, TantivyError,
    collector::DocSetCollector, directory::MmapDirectory,
};
use tokio::sync::Mutex;

pub(crate) use search::Retrieval;

use self::{
    schema::{Fields, KIND_DOCUMENT},
    write::{WRITER_MEMORY_BYTES, WriterSlot},
};
pub(crate) use super::document::NewDocument;
use super::tokenizer::{self, ANALYZER};
use crate::error::{Error, Result, StorageFault};

/// An indexed document, without its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Source.
    pub source: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Size of the text in bytes.
    pub size_bytes: u64,
    /// When it was last ingested.
    pub ingest_time: SystemTime,
}

/// A passage found for a question.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievedPassage {
    /// The document it comes from.
    pub document_id: String,
    /// The document's title.
    pub title: String,
    /// The passage.
    pub text: String,
    /// BM25 score; higher is better.
    pub score: f32,
    /// The document's source.
    pub source: String,
}

/// What an ingestion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// The ids of the documents, in request order (assigned ones included).
    pub document_ids: Vec<String>,
    /// Passages indexed.
    pub passages: usize,
}

/// One page of the document list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentPage {
    /// Documents ordered by id.
    pub documents: Vec<DocumentInfo>,
    /// The id to continue after; `None` on the last page.
    pub next_after: Option<String>,
}

/// Where an ingestion reports progress and learns it was cancelled: the
/// task registry's context in the server, anything else in tests and tools.
pub trait IngestProgress: Send + Sync {
    /// `step` of `total_steps` is done; `message` says what.
    fn progress(&self, step: u32, total_steps: u32, message: String);
    /// Whether the ingestion should stop (and roll back) now.
    fn is_cancelled(&self) -> bool;
}

/// Progress that nobody watches and that is never cancelled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwatched;

impl IngestProgress for Unwatched {
    fn progress(&self, _step: u32, _total_steps: u32, _message: String) {}

    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Why an ingestion did not succeed; in every case the index is unchanged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// The ingestion was cancelled before its commit.
    #[error("ingestion cancelled; the index is unchanged")]
    Cancelled,
    /// The ingestion failed.
    #[error("ingestion failed, the index is unchanged: {0}")]
    Failed(#[from] Error),
}

struct Inner {
    /// The index's directory.
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    writer: Arc<Mutex<WriterSlot>>,
    catalog: RwLock<BTreeMap<String, DocumentInfo>>,
}

/// The document index; cheap to clone, shared by every call.
#[derive(Clone)]
pub struct DocumentIndex {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DocumentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentIndex")
            .field("documents", &self.len())
            .finish_non_exhaustive()
    }
}

impl DocumentIndex {
    /// Opens the index under `data_dir`, creating it on first start.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("index");
        blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
            let directory = MmapDirectory::open(&dir).map_err(internal)?;
            Self::open_blocking(Box::new(directory), &dir)
        })
        .await?
    }

    /// Opens the index kept in `directory`, a tantivy directory whose files
    /// are in `dir` (the one [`DocumentIndex::open`] uses is an
    /// `MmapDirectory`; tests pass one that injects faults).
    pub async fn open_in(directory: Box<dyn Directory>, dir: PathBuf) -> Result<Self> {
        blocking(move || Self::open_blocking(directory, &dir)).await?
    }

    fn open_blocking(directory: Box<dyn Directory>, dir: &Path) -> Result<Self> {
        let (schema, fields) = Fields::schema();
        let index = Index::open_or_create(directory, schema).map_err(internal)?;
        index.tokenizers().register(ANALYZER, tokenizer::analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(internal)?;
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(|e| writer_error(e, dir))?;
        // Holding the writer, nobody else writes here: what a failed or
        // killed ingestion left can go.
        write::clean_up(&writer, dir);
        let catalog = load_catalog(&reader.searcher(), &fields)?;
        // The segmenter's dictionary (tens of megabytes) is loaded by the
        // first ingestion or question, not here: a server that never uses
        // RAG never pays for it.
        tracing::info!(path = %dir.display(), documents = catalog.len(), "document index open");
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                index,
                reader,
                fields,
                writer: Arc::new(Mutex::new(Some(writer))),
                catalog: RwLock::new(catalog),
            }),
        })
    }

    /// Number of documents indexed.
    pub fn len(&self) -> usize {
        self.inner.catalog.read().map_or(0, |c| c.len())
    }

    /// Bytes the index's files take on disk (0 if they cannot be listed).
    pub(crate) fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.inner.dir).map_or(0, |entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
    }

    /// Whether no document is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The document `id`, if indexed.
    pub fn get(&self, id: &str) -> Option<DocumentInfo> {
        self.inner.catalog.read().ok()?.get(id).cloned()
    }

    /// Up to `page_size` documents with ids after `after`, ordered by id.
    pub fn list(&self, page_size: usize, after: Option<&str>) -> Result<DocumentPage> {
        let catalog = self
            .inner
            .catalog
            .read()
            .map_err(|_| Error::Internal("document catalog lock poisoned".into()))?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = catalog.range::<str, _>((lower, Bound::Unbounded));
        let documents: Vec<DocumentInfo> = range
            .by_ref()
            .take(page_size)
            .map(|(_, d)| d.clone())
            .collect();
        let next_after = match (range.next(), documents.last()) {
            (Some(_), Some(last)) => Some(last.id.clone()),
            _ => None,
        };
        Ok(DocumentPage {
            documents,
            next_after,
        })
    }
}

fn load_catalog(searcher: &Searcher, fields: &Fields) -> Result<BTreeMap<String, DocumentInfo>> {
    let addresses = searcher
        .search(&fields.kind_query(KIND_DOCUMENT), &DocSetCollector)
        .map_err(internal)?;
    let mut catalog = BTreeMap::new();
    for address in addresses {
        let doc: TantivyDocument = searcher.doc(address).map_err(internal)?;
        let info = fields.document_info(&doc);
        catalog.insert(info.id.clone(), info);
    }
    Ok(catalog)
}

/// Runs blocking index work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("index work did not complete: {e}")))
}

/// Tantivy's writer lock is taken: another server uses this data directory
/// (`dir` is its `index/`), which is what the person must be told.
fn writer_error(error: tantivy::TantivyError, dir: &Path) -> Error {
    match error {
        tantivy::TantivyError::LockFailure(tantivy::directory::error::LockError::LockBusy, _) => {
            Error::FailedPrecondition(format!(
                "another agentstream is using {}; use --data-dir",
                dir.parent().unwrap_or(dir).display()
            ))
        }
        other => internal(other),
    }
}

fn internal(error: impl std::fmt::Display) -> Error {
    Error::Internal(format!("document index: {error}"))
}

/// A tantivy error as the client is told it: a full or unwritable disk is
/// [`Error::Storage`], any other I/O error an internal one. Neither names a
/// file (tantivy's errors carry the paths of the server's files); the log
/// line keeps the whole error.
fn index_error(error: TantivyError) -> Error {
    let Some(io) = io_error(&error) else {
        return internal(error);
    };
    tracing::error!(%error, "document index: storage error");
    match StorageFault::of(&io) {
        Some(fault) => Error::Storage {
            fault,
            message: match fault {
                StorageFault::Full => {
                    "the server's disk is full: the document index cannot grow; retry once space is freed"
                }
                StorageFault::NotWritable => {
                    "the server cannot write its document index (permission denied or read-only storage)"
                }
            }
            .to_owned(),
        },
        None => Error::Internal(format!(
            "document index: storage error ({}); the server log has the details",
            io.kind()
        )),
    }
}

/// The I/O error a tantivy error carries, if any. Some of tantivy's paths
/// (its document store, its plugins) keep only the I/O error's text, so an
/// OS error is also recognised by the `(os error N)` its text ends with.
fn io_error(error: &TantivyError) -> Option<std::io::Error> {
    use tantivy::directory::error::{LockError, OpenDirectoryError, OpenReadError, OpenWriteError};
    match error {
        TantivyError::IoError(io)
        | TantivyError::LockFailure(LockError::IoError(io), _)
        | TantivyError::OpenWriteError(OpenWriteError::IoError { io_error: io, .. })
        | TantivyError::OpenReadError(OpenReadError::IoError { io_error: io, .. })
        | TantivyError::OpenDirectoryError(OpenDirectoryError::IoError { io_error: io, .. }) => {
            Some(match io.raw_os_error() {
                Some(errno) => std::io::Error::from_raw_os_error(errno),
                None => std::io::Error::from(io.kind()),
            })
        }
        other => errno_in(&other.to_string()).map(std::io::Error::from_raw_os_error),
    }
}

/// The OS error number in an I/O error's text: `... (os error 28)` as its
/// `Display` writes it, `Os { code: 28, ... }` as its `Debug` does.
fn errno_in(text: &str) -> Option<i32> {
    ["(os error ", "Os { code: "].iter().find_map(|marker| {
        let start = text.find(marker)? + marker.len();
        let digits: String = text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn storage_errors_are_told_apart_and_name_no_file() {
        const ENOSPC: i32 = 28;
        const EACCES: i32 = 13;
        let typed =
            TantivyError::OpenWriteError(tantivy::directory::error::OpenWriteError::wrap_io_error(
                std::io::Error::from_raw_os_error(ENOSPC),
                PathBuf::from("/srv/data/index/abc.idx"),
            ));
        let as_text =
            TantivyError::InternalError(std::io::Error::from_raw_os_error(EACCES).to_string());
        let other = TantivyError::InternalError("bad segment".into());
        let full = index_error(typed);
        assert_eq!(full.kind(), ErrorKind::ResourceExhausted, "{full}");
        assert!(!full.to_string().contains("/srv"), "{full}");
        let denied = index_error(as_text);
        assert_eq!(denied.kind(), ErrorKind::Unavailable, "{denied}");
        assert_eq!(index_error(other).kind(), ErrorKind::Internal);
    }

    #[test]
    fn the_errno_is_read_from_display_and_debug_text() {
        assert_eq!(errno_in("No space left on device (os error 28)"), Some(28));
        assert_eq!(
            errno_in("IoError 'Os { code: 13, kind: PermissionDenied }'"),
            Some(13)
        );
        assert_eq!(errno_in("no number"), None);
    }
}
