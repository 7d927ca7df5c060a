//! The RAG operations, protocol-free: what both edges call.

use std::sync::Arc;

use futures::Stream;

use super::{
    events::{AnswerEvent, answer_events},
    index::{DocumentIndex, DocumentInfo, IngestError, IngestProgress, NewDocument},
    queue::{DEFAULT_MAX_QUEUED_INGEST_BYTES, IngestQueue},
    request::{self, AnswerDraft, AnswerRequest, ListDraft, ListRequest},
};
use crate::{
    error::{Error, Result},
    llm::{Models, TokenBudget},
    metrics::Metrics,
    tasks::{TaskContext, TaskRegistry, TaskSnapshot},
};

/// The `kind` of ingestion tasks in TaskService.
pub(crate) const INGEST_TASK_KIND: &str = "ingest";

/// Ingestion reports its progress as task events.
impl IngestProgress for TaskContext {
    fn progress(&self, step: u32, total_steps: u32, message: String) {
        TaskContext::progress(self, step, total_steps, message);
    }

    fn is_cancelled(&self) -> bool {
        TaskContext::is_cancelled(self)
    }
}

/// Ingestion, answers and the document list over one index.
#[derive(Clone)]
pub(crate) struct Rag {
    index: DocumentIndex,
    tasks: TaskRegistry,
    models: Arc<Models>,
    budget: TokenBudget,
    /// The ingestions admitted and not finished.
    queue: IngestQueue,
    /// Counts what ingestion adds, when the server keeps metrics.
    metrics: Option<Arc<Metrics>>,
}

/// One page of the document list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocumentListing {
    /// The documents, by id.
    pub documents: Vec<DocumentInfo>,
    /// The token of the next page; empty on the last.
    pub next_page_token: String,
}

impl Rag {
    /// RAG over `index`, answering with `models`; the answers of models
    /// whose backend can recite (the built-in ones) are extractive.
    pub(crate) fn new(
        index: DocumentIndex,
        tasks: TaskRegistry,
        models: Arc<Models>,
        budget: TokenBudget,
    ) -> Self {
        Self {
            index,
            tasks,
            models,
            budget,
            queue: IngestQueue::new(DEFAULT_MAX_QUEUED_INGEST_BYTES),
            metrics: None,
        }
    }

    /// Admits ingestions while those admitted and unfinished hold at most
    /// `limit` bytes of documents (default
    /// [`DEFAULT_MAX_QUEUED_INGEST_BYTES`]).
    pub(crate) fn with_max_queued_ingest_bytes(mut self, limit: usize) -> Self {
        self.queue = IngestQueue::new(limit);
        self
    }

    /// Counts ingested documents and bytes in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks `documents` and starts their ingestion as a task of the task
    /// registry, returned at once; the task commits once at the end and
    /// rolls back on failure or cancellation. Refused with
    /// RESOURCE_EXHAUSTED (and a retry hint) when the ingestions waiting for
    /// the index writer already hold as many bytes as allowed.
    pub(crate) async fn ingest(&self, documents: Vec<NewDocument>) -> Result<TaskSnapshot> {
        let documents = request::ingest_request(documents)?;
        // Held by the task until it ends, released if it never starts.
        let admitted = self.queue.admit(&documents)?;
        let index = self.index.clone();
        let metrics = self.metrics.clone();
        let count = documents.len() as u64;
        let bytes: u64 = documents.iter().map(|d| d.text.len() as u64).sum();
        self.tasks
            .try_start(INGEST_TASK_KIND, move |ctx| async move {
                let _admitted = admitted;
                index.ingest(documents, &ctx).await?;
                if let Some(metrics) = metrics {
                    metrics.ingested_documents.inc_by(count);
                    metrics.ingested_bytes.inc_by(bytes);
                }
                Ok::<_, IngestError>(())
            })
            .await
    }

    /// Checks `draft` and resolves its model; returns the model and the
    /// pulled stream of the answer's events (nothing runs until polled).
    pub(crate) fn answer(
        &self,
        draft: AnswerDraft,
    ) -> Result<(
        String,
        impl Stream<Item = Result<AnswerEvent>> + Send + 'static,
    )> {
        let request = AnswerRequest::validate(draft, &self.budget)?;
        let (model, backend) = self.models.resolve(&request.model)?;
        let events = answer_events(self.index.clone(), request, model.clone(), backend);
        Ok((model, events))
    }

    /// One page of the document list.
    pub(crate) fn list(&self, draft: ListDraft) -> Result<DocumentListing> {
        let list = ListRequest::validate(draft)?;
        let page = self.index.list(list.page_size, list.after.as_deref())?;
        Ok(DocumentListing {
            documents: page.documents,
            next_page_token: page
                .next_after
                .map(|id| request::encode_page_token(&id))
                .unwrap_or_default(),
        })
    }

    /// Deletes the document `id`, durably. An id that an admitted
    /// ingestion will write waits for it (and for the writer); one that is
    /// neither indexed nor on its way is NOT_FOUND at once.
    pub(crate) async fn delete(&self, id: &str) -> Result<()> {
        request::delete_request(id)?;
        // The queue first: an ingestion gives its ids back only once they
        // are in the catalog, so an id absent from both is absent.
        if !self.queue.holds(id) && self.index.get(id).is_none() {
            return Err(Error::NotFound(format!("document `{id}`")));
        }
        self.index.delete(id).await
    }
}
