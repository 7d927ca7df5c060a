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

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
    collector::{DocSetCollector, TopDocs},
    directory::MmapDirectory,
    query::{BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery},
    schema::{
        Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
    },
};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use super::document::NewDocument;
use super::{
    document::check_document,
    passages::split_passages,
    tokenizer::{self, ANALYZER},
};
use crate::{
    error::{Error, Result},
    validation::Violations,
};

/// Documents added between two progress reports (and cancellation checks).
pub const INGEST_BATCH: usize = 50;
/// Most passages of one document among the results of one search, so that
/// one long document does not crowd out the rest.
pub const MAX_PASSAGES_PER_DOCUMENT: usize = 2;
/// Weight of a title match relative to a match in the passage text.
const TITLE_BOOST: f32 = 0.5;
/// Most hits examined to fill `top_k` under the per-document cap.
const MAX_CANDIDATES: usize = 2_000;
/// Memory the writer may buffer before it flushes a segment.
const WRITER_MEMORY_BYTES: usize = 64 << 20;

const KIND_DOCUMENT: &str = "document";
const KIND_PASSAGE: &str = "passage";

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

/// The fields of the schema.
#[derive(Debug, Clone, Copy)]
struct Fields {
    kind: Field,
    doc_id: Field,
    title: Field,
    text: Field,
    source: Field,
    meta_key: Field,
    meta_value: Field,
    size_bytes: Field,
    ingest_time_us: Field,
    ordinal: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let searchable = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            )
            .set_stored();
        let fields = Fields {
            kind: builder.add_text_field("kind", STRING),
            doc_id: builder.add_text_field("doc_id", STRING | STORED),
            title: builder.add_text_field("title", searchable.clone()),
            text: builder.add_text_field("text", searchable),
            source: builder.add_text_field("source", STORED),
            meta_key: builder.add_text_field("meta_key", STORED),
            meta_value: builder.add_text_field("meta_value", STORED),
            size_bytes: builder.add_u64_field("size_bytes", STORED),
            ingest_time_us: builder.add_i64_field("ingest_time_us", STORED),
            ordinal: builder.add_u64_field("ordinal", STORED),
        };
        (builder.build(), fields)
    }

    fn str(&self, doc: &TantivyDocument, field: Field) -> String {
        doc.get_first(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    fn document_record(&self, id: &str, doc: &NewDocument, time: SystemTime) -> TantivyDocument {
        let mut record = TantivyDocument::new();
        record.add_text(self.kind, KIND_DOCUMENT);
        record.add_text(self.doc_id, id);
        record.add_text(self.title, &doc.title);
        record.add_text(self.source, &doc.source);
        for (key, value) in &doc.metadata {
            record.add_text(self.meta_key, key);
            record.add_text(self.meta_value, value);
        }
        record.add_u64(self.size_bytes, doc.text.len() as u64);
        record.add_i64(self.ingest_time_us, unix_micros(time));
        record
    }

    fn passage_record(
        &self,
        id: &str,
        doc: &NewDocument,
        ordinal: usize,
        text: &str,
    ) -> TantivyDocument {
        let mut record = TantivyDocument::new();
        record.add_text(self.kind, KIND_PASSAGE);
        record.add_text(self.doc_id, id);
        record.add_text(self.title, &doc.title);
        record.add_text(self.text, text);
        record.add_text(self.source, &doc.source);
        record.add_u64(self.ordinal, ordinal as u64);
        record
    }

    fn document_info(&self, doc: &TantivyDocument) -> DocumentInfo {
        let metadata = doc
            .get_all(self.meta_key)
            .zip(doc.get_all(self.meta_value))
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
            .collect();
        let micros = doc
            .get_first(self.ingest_time_us)
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        DocumentInfo {
            id: self.str(doc, self.doc_id),
            title: self.str(doc, self.title),
            source: self.str(doc, self.source),
            metadata,
            size_bytes: doc
                .get_first(self.size_bytes)
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
            ingest_time: UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64),
        }
    }

    fn passage(&self, doc: &TantivyDocument, score: f32) -> RetrievedPassage {
        RetrievedPassage {
            document_id: self.str(doc, self.doc_id),
            title: self.str(doc, self.title),
            text: self.str(doc, self.text),
            score,
            source: self.str(doc, self.source),
        }
    }

    fn id_term(&self, id: &str) -> Term {
        Term::from_field_text(self.doc_id, id)
    }

    fn kind_query(&self, kind: &str) -> TermQuery {
        TermQuery::new(
            Term::from_field_text(self.kind, kind),
            IndexRecordOption::Basic,
        )
    }
}

/// The writer, or `None` once the index is closed.
type WriterSlot = Option<IndexWriter>;

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
        blocking(move || Self::open_blocking(&dir)).await?
    }

    fn open_blocking(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let directory = MmapDirectory::open(dir).map_err(internal)?;
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
            .map_err(internal)?;
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
    pub fn disk_bytes(&self) -> u64 {
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

    /// Indexes `documents`, replacing those whose id exists, in batches of
    /// [`INGEST_BATCH`] with a progress report after each, then commits once.
    /// On success every document is searchable and durable; on failure or
    /// cancellation the index is unchanged.
    pub async fn ingest(
        &self,
        documents: Vec<NewDocument>,
        progress: &dyn IngestProgress,
    ) -> Result<IngestReport, IngestError> {
        let total = documents.len();
        let total_steps = u32::try_from(total.saturating_add(1)).unwrap_or(u32::MAX);
        let mut session = self.write_session().await?;
        let mut report = IngestReport::default();
        let mut infos = Vec::with_capacity(total);
        let mut remaining = documents.into_iter();
        loop {
            let batch: Vec<NewDocument> = remaining.by_ref().take(INGEST_BATCH).collect();
            if batch.is_empty() {
                break;
            }
            if progress.is_cancelled() {
                session.abort().await;
                return Err(IngestError::Cancelled);
            }
            let (returned, added) = session.run(move |s| s.add_batch(batch)).await?;
            session = returned;
            match added {
                Ok(added) => {
                    report.passages += added.passages;
                    infos.extend(added.infos);
                }
                Err(error) => {
                    session.abort().await;
                    return Err(error.into());
                }
            }
            let done = infos.len();
            progress.progress(
                done as u32,
                total_steps,
                format!("indexed {done}/{total} documents"),
            );
        }
        if progress.is_cancelled() {
            session.abort().await;
            return Err(IngestError::Cancelled);
        }
        progress.progress(
            total as u32,
            total_steps,
            format!("committing {total} documents"),
        );
        report.document_ids = infos.iter().map(|i| i.id.clone()).collect();
        let (session, committed) = session.run(move |s| s.commit(infos)).await?;
        if let Err(error) = committed {
            session.abort().await;
            return Err(error.into());
        }
        progress.progress(
            total_steps,
            total_steps,
            format!("committed {total} documents ({} passages)", report.passages),
        );
        Ok(report)
    }

    /// Deletes the document `id` and commits; durable when it returns.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let session = self.write_session().await?;
        if self.get(id).is_none() {
            return Err(Error::NotFound(format!("document `{id}`")));
        }
        let id = id.to_owned();
        let (session, deleted) = session.run(move |s| s.delete(id)).await?;
        if deleted.is_err() {
            session.abort().await;
        }
        deleted
    }

    /// The best passages for `question`, at most `top_k` and at most
    /// [`MAX_PASSAGES_PER_DOCUMENT`] per document, best first. Empty when no
    /// passage shares a meaningful term with the question.
    pub async fn search(&self, question: &str, top_k: usize) -> Result<Vec<RetrievedPassage>> {
        let inner = self.inner.clone();
        let terms = tokenizer::question_terms(question);
        blocking(move || search_blocking(&inner, &terms, top_k)).await?
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

    /// Stops accepting writes and releases the writer (and its directory
    /// lock), so another server can open the same data directory.
    pub async fn close(&self) {
        let mut slot = self.inner.writer.clone().lock_owned().await;
        if let Some(writer) = slot.take() {
            let joined = tokio::task::spawn_blocking(move || writer.wait_merging_threads()).await;
            if let Ok(Err(error)) = joined {
                tracing::warn!(%error, "index writer did not close cleanly");
            }
        }
    }

    async fn write_session(&self) -> Result<WriteSession> {
        let guard = self.inner.writer.clone().lock_owned().await;
        if guard.is_none() {
            return Err(Error::Unavailable(
                "the document index is closed: the server is shutting down".into(),
            ));
        }
        Ok(WriteSession {
            guard: Some(guard),
            inner: self.inner.clone(),
            dirty: false,
        })
    }
}

/// The documents of one batch, as added to the writer.
struct AddedBatch {
    infos: Vec<DocumentInfo>,
    passages: usize,
}

/// Exclusive use of the writer for one ingestion or deletion. Dropped
/// without a commit, it rolls the writer back before releasing it.
struct WriteSession {
    guard: Option<OwnedMutexGuard<WriterSlot>>,
    inner: Arc<Inner>,
    /// Whether uncommitted operations were given to the writer.
    dirty: bool,
}

impl WriteSession {
    /// Runs `work` on the blocking pool and hands the session back.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce(&mut WriteSession) -> Result<T> + Send + 'static,
    ) -> Result<(WriteSession, Result<T>)> {
        blocking(move || {
            let mut session = self;
            let result = work(&mut session);
            (session, result)
        })
        .await
    }

    fn writer(&mut self) -> Result<&mut IndexWriter> {
        self.guard
            .as_mut()
            .and_then(|g| g.as_mut())
            .ok_or_else(|| Error::Internal("write session without a writer".into()))
    }

    fn add_batch(&mut self, batch: Vec<NewDocument>) -> Result<AddedBatch> {
        let fields = self.inner.fields;
        let now = SystemTime::now();
        let mut added = AddedBatch {
            infos: Vec::with_capacity(batch.len()),
            passages: 0,
        };
        for doc in batch {
            let mut violations = Violations::new();
            check_document("document", &doc, &mut violations);
            violations.finish()?;
            let id = if doc.id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                doc.id.clone()
            };
            self.dirty = true;
            let writer = self.writer()?;
            writer.delete_term(fields.id_term(&id));
            writer
                .add_document(fields.document_record(&id, &doc, now))
                .map_err(internal)?;
            for (ordinal, text) in split_passages(&doc.text).into_iter().enumerate() {
                writer
                    .add_document(fields.passage_record(&id, &doc, ordinal, text))
                    .map_err(internal)?;
                added.passages += 1;
            }
            added.infos.push(DocumentInfo {
                id,
                title: doc.title,
                source: doc.source,
                metadata: doc.metadata,
                size_bytes: doc.text.len() as u64,
                ingest_time: now,
            });
        }
        Ok(added)
    }

    /// Commits, makes the commit visible and records it in the catalog.
    fn commit(&mut self, infos: Vec<DocumentInfo>) -> Result<()> {
        self.commit_and_reload()?;
        let mut catalog = self.catalog()?;
        for info in infos {
            catalog.insert(info.id.clone(), info);
        }
        Ok(())
    }

    fn delete(&mut self, id: String) -> Result<()> {
        let term = self.inner.fields.id_term(&id);
        self.dirty = true;
        self.writer()?.delete_term(term);
        self.commit_and_reload()?;
        self.catalog()?.remove(&id);
        Ok(())
    }

    fn commit_and_reload(&mut self) -> Result<()> {
        self.writer()?.commit().map_err(internal)?;
        self.dirty = false;
        if let Err(error) = self.inner.reader.reload() {
            // Committed and durable; searches catch up at the next reload.
            tracing::warn!(%error, "index reader did not reload after a commit");
        }
        Ok(())
    }

    fn catalog(&self) -> Result<std::sync::RwLockWriteGuard<'_, BTreeMap<String, DocumentInfo>>> {
        self.inner
            .catalog
            .write()
            .map_err(|_| Error::Internal("document catalog lock poisoned".into()))
    }

    /// Rolls back what was not committed, then releases the writer.
    async fn abort(mut self) {
        if let Some(guard) = self.guard.take()
            && self.dirty
        {
            let inner = self.inner.clone();
            let _ = tokio::task::spawn_blocking(move || roll_back(&inner, guard)).await;
        }
    }
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        if !self.dirty {
            return;
        }
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || roll_back(&inner, guard));
            }
            Err(_) => roll_back(&inner, guard),
        }
    }
}

/// Discards every uncommitted operation. When even that fails, the writer
/// is replaced by a fresh one, which equally forgets them.
fn roll_back(inner: &Inner, mut slot: OwnedMutexGuard<WriterSlot>) {
    let Some(writer) = slot.as_mut() else { return };
    match writer.rollback() {
        Ok(_) => tracing::info!("index writer rolled back to the last commit"),
        Err(error) => {
            tracing::error!(%error, "index rollback failed; reopening the writer");
            *slot = None;
            match inner.index.writer_with_num_threads(1, WRITER_MEMORY_BYTES) {
                Ok(writer) => *slot = Some(writer),
                Err(error) => tracing::error!(%error, "index writer lost: writes now fail"),
            }
        }
    }
}

fn search_blocking(inner: &Inner, terms: &[String], top_k: usize) -> Result<Vec<RetrievedPassage>> {
    if terms.is_empty() || top_k == 0 {
        return Ok(Vec::new());
    }
    let fields = inner.fields;
    let mut any_term: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(terms.len() * 2);
    for term in terms {
        let in_text = TermQuery::new(
            Term::from_field_text(fields.text, term),
            IndexRecordOption::WithFreqs,
        );
        let in_title = TermQuery::new(
            Term::from_field_text(fields.title, term),
            IndexRecordOption::WithFreqs,
        );
        any_term.push((Occur::Should, Box::new(in_text)));
        any_term.push((
            Occur::Should,
            Box::new(BoostQuery::new(Box::new(in_title), TITLE_BOOST)),
        ));
    }
    let passages_only = ConstScoreQuery::new(Box::new(fields.kind_query(KIND_PASSAGE)), 0.0);
    let query = BooleanQuery::new(vec![
        (Occur::Must, Box::new(passages_only)),
        (Occur::Must, Box::new(BooleanQuery::new(any_term))),
    ]);
    let searcher = inner.reader.searcher();
    let mut limit = (top_k * MAX_PASSAGES_PER_DOCUMENT * 2).max(16);
    loop {
        let hits = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(internal)?;
        let exhausted = hits.len() < limit;
        let picked = pick_passages(&searcher, &fields, hits, top_k)?;
        if picked.len() >= top_k || exhausted || limit >= MAX_CANDIDATES {
            return Ok(picked);
        }
        limit = (limit * 4).min(MAX_CANDIDATES);
    }
}

/// The best hits under the per-document cap.
fn pick_passages(
    searcher: &Searcher,
    fields: &Fields,
    hits: Vec<(f32, DocAddress)>,
    top_k: usize,
) -> Result<Vec<RetrievedPassage>> {
    let mut per_document: HashMap<String, usize> = HashMap::new();
    let mut picked = Vec::with_capacity(top_k);
    for (score, address) in hits {
        let doc: TantivyDocument = searcher.doc(address).map_err(internal)?;
        let passage = fields.passage(&doc, score);
        let count = per_document.entry(passage.document_id.clone()).or_default();
        if *count >= MAX_PASSAGES_PER_DOCUMENT {
            continue;
        }
        *count += 1;
        picked.push(passage);
        if picked.len() == top_k {
            break;
        }
    }
    Ok(picked)
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

fn internal(error: impl std::fmt::Display) -> Error {
    Error::Internal(format!("document index: {error}"))
}

fn unix_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
