//! Writing: ingestion, deletion, and the session that holds the writer.
//!
//! Writes go through the single `IndexWriter`, behind an async mutex held
//! for a whole ingestion (or deletion) by a [`WriteSession`]. An ingestion
//! adds its documents batch by batch, then commits once; a session dropped
//! or aborted without its commit rolls the writer back before releasing it,
//! so no half ingestion can ride on a later commit.
//!
//! A rollback also deletes the files of the segments it discarded (tantivy
//! leaves them to the next successful commit, which a full disk would never
//! allow), and opening the index deletes what a killed server left
//! ([`clean_up`]).

use std::{path::Path, sync::Arc, time::SystemTime};

use tantivy::{IndexWriter, TantivyError};
use tokio::sync::OwnedMutexGuard;

use super::{
    DocumentIndex, DocumentInfo, IngestError, IngestProgress, IngestReport, Inner, NewDocument,
    blocking, index_error,
};
use crate::{
    error::{Error, Result},
    rag::{document::check_document, passages::split_passages},
    validation::Violations,
};

/// Documents added between two progress reports (and cancellation checks).
pub(crate) const INGEST_BATCH: usize = 50;
/// Memory the writer may buffer before it flushes a segment.
pub(super) const WRITER_MEMORY_BYTES: usize = 64 << 20;

/// The writer, or `None` once the index is closed.
pub(super) type WriterSlot = Option<IndexWriter>;

impl DocumentIndex {
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
                .map_err(|e| worker_failure(writer, e))?;
            for (ordinal, text) in split_passages(&doc.text).iter().enumerate() {
                writer
                    .add_document(fields.passage_record(&id, &doc, ordinal, text))
                    .map_err(|e| worker_failure(writer, e))?;
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
        self.writer()?.commit().map_err(index_error)?;
        self.dirty = false;
        if let Err(error) = self.inner.reader.reload() {
            // Committed and durable; searches catch up at the next reload.
            tracing::warn!(%error, "index reader did not reload after a commit");
        }
        Ok(())
    }

    fn catalog(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, std::collections::BTreeMap<String, DocumentInfo>>>
    {
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

/// Why adding a document failed: the indexing thread stopped (tantivy then
/// only says the writer "was killed"), and joining it, as preparing a
/// commit does, gives its own error, such as a full disk while it flushed
/// a segment. Nothing is committed here: the caller rolls back.
fn worker_failure(writer: &mut IndexWriter, error: TantivyError) -> Error {
    match writer.prepare_commit() {
        Err(cause) => index_error(cause),
        Ok(_not_committed) => index_error(error),
    }
}

/// Discards every uncommitted operation and deletes the files they had
/// written. When the rollback itself fails, the writer is replaced by a
/// fresh one, which equally forgets them.
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
    if let Some(writer) = slot.as_ref() {
        collect_garbage(writer);
    }
}

/// Deletes what a failed or killed ingestion left in `dir`: the files of
/// segments that no commit references, and the temporary files of an
/// interrupted atomic write (`meta.json` is replaced by renaming one). Must
/// run with the writer held, so that no write is under way.
pub(super) fn clean_up(writer: &IndexWriter, dir: &Path) {
    collect_garbage(writer);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = ?name, "removed a stale temporary index file"),
                Err(error) => {
                    tracing::warn!(file = ?name, %error, "stale temporary index file stays")
                }
            }
        }
    }
}

/// Deletes the index files that no commit (and no open searcher) uses.
fn collect_garbage(writer: &IndexWriter) {
    match writer.garbage_collect_files().wait() {
        Ok(result) if !result.deleted_files.is_empty() => tracing::info!(
            deleted = result.deleted_files.len(),
            "deleted index files no commit uses"
        ),
        Ok(_) => {}
        // A disk that refuses even deletions: the next rollback, commit or
        // start tries again.
        Err(error) => tracing::warn!(%error, "unused index files could not be deleted"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::rag::index::Unwatched;

    fn doc(id: &str, text: &str) -> NewDocument {
        NewDocument {
            id: id.into(),
            title: format!("Title of {id}"),
            text: text.into(),
            ..NewDocument::default()
        }
    }

    fn numbered(count: usize) -> Vec<NewDocument> {
        (0..count)
            .map(|k| {
                doc(
                    &format!("doc-{k:03}"),
                    &format!("Document {k} about streams."),
                )
            })
            .collect()
    }

    /// Records progress; cancels after `cancel_after` reports.
    struct Recorder {
        reports: Mutex<Vec<(u32, u32, String)>>,
        cancel_after: usize,
    }

    impl Recorder {
        fn new(cancel_after: usize) -> Self {
            Self {
                reports: Mutex::new(Vec::new()),
                cancel_after,
            }
        }

        fn reports(&self) -> Vec<(u32, u32, String)> {
            self.reports.lock().expect("lock").clone()
        }
    }

    impl IngestProgress for Recorder {
        fn progress(&self, step: u32, total_steps: u32, message: String) {
            self.reports
                .lock()
                .expect("lock")
                .push((step, total_steps, message));
        }

        fn is_cancelled(&self) -> bool {
            self.reports.lock().expect("lock").len() >= self.cancel_after
        }
    }

    async fn open(dir: &tempfile::TempDir) -> DocumentIndex {
        DocumentIndex::open(dir.path()).await.expect("open")
    }

    fn ids(index: &DocumentIndex) -> Vec<String> {
        index
            .list(10_000, None)
            .expect("list")
            .documents
            .into_iter()
            .map(|d| d.id)
            .collect()
    }

    #[tokio::test]
    async fn progress_comes_per_batch_and_the_commit_last() {
        let dir = tempfile::tempdir().expect("dir");
        let index = open(&dir).await;
        let recorder = Recorder::new(usize::MAX);
        let report = index
            .ingest(numbered(INGEST_BATCH * 2 + 1), &recorder)
            .await
            .expect("ingest");
        assert_eq!(report.document_ids.len(), INGEST_BATCH * 2 + 1);
        let steps: Vec<u32> = recorder.reports().iter().map(|r| r.0).collect();
        let total = (INGEST_BATCH * 2 + 1) as u32;
        assert_eq!(steps, [50, 100, 101, total, total + 1]);
        assert!(
            recorder
                .reports()
                .last()
                .expect("report")
                .2
                .starts_with("committed")
        );
        assert_eq!(index.len(), INGEST_BATCH * 2 + 1);
    }

    #[tokio::test]
    async fn a_cancelled_or_failed_ingestion_leaves_the_index_as_it_was() {
        let dir = tempfile::tempdir().expect("dir");
        let index = open(&dir).await;
        index
            .ingest(vec![doc("seed", "The seed document.")], &Unwatched)
            .await
            .expect("seed");
        let cancelled = index
            .ingest(numbered(INGEST_BATCH * 3), &Recorder::new(1))
            .await;
        assert!(
            matches!(cancelled, Err(IngestError::Cancelled)),
            "{cancelled:?}"
        );
        let mut bad = numbered(INGEST_BATCH + 5);
        bad.push(doc("blank", "   "));
        let failed = index.ingest(bad, &Unwatched).await;
        assert!(matches!(failed, Err(IngestError::Failed(_))), "{failed:?}");
        assert_eq!(ids(&index), ["seed"]);
        let found = index.search("document streams", 4).await.expect("search");
        assert!(found.passages.iter().all(|p| p.document_id == "seed"));
        // And the writer is free for the next ingestion.
        index
            .ingest(vec![doc("next", "Next.")], &Unwatched)
            .await
            .expect("next");
        assert_eq!(ids(&index), ["next", "seed"]);
    }

    #[tokio::test]
    async fn reingesting_replaces_and_deleting_removes_durably() {
        let dir = tempfile::tempdir().expect("dir");
        let index = open(&dir).await;
        index
            .ingest(
                vec![doc("a", "Old text about rivers."), doc("b", "Mountains.")],
                &Unwatched,
            )
            .await
            .expect("ingest");
        index
            .ingest(vec![doc("a", "New text about lakes.")], &Unwatched)
            .await
            .expect("replace");
        assert!(
            index
                .search("rivers", 4)
                .await
                .expect("search")
                .passages
                .is_empty()
        );
        assert_eq!(
            index
                .search("lakes", 4)
                .await
                .expect("search")
                .passages
                .len(),
            1
        );
        index.delete("b").await.expect("delete");
        assert!(matches!(index.delete("b").await, Err(Error::NotFound(_))));
        index.close().await;
        drop(index);
        let reopened = open(&dir).await;
        assert_eq!(ids(&reopened), ["a"]);
        let found = reopened.search("lakes", 4).await.expect("search");
        assert_eq!(found.passages[0].document_id, "a");
        assert!(
            reopened
                .search("mountains", 4)
                .await
                .expect("search")
                .passages
                .is_empty()
        );
    }
}
