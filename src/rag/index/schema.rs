//! The fields of the index and the records written to and read from it.
//!
//! One schema holds two kinds of records, told apart by `kind`: a
//! *document* record (what ListDocuments returns) and one *passage* record
//! per passage, which copies the document's id, title and source so that a
//! search hit carries all it needs. Passage text and titles go through the
//! mixed Chinese/English analyzer with term frequencies (for BM25); the
//! document id is a raw term, so one `delete_term` removes every record of
//! a document.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tantivy::{
    TantivyDocument, Term,
    query::TermQuery,
    schema::{
        Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
    },
};

use super::{DocumentInfo, NewDocument, RetrievedPassage};
use crate::rag::tokenizer::ANALYZER;

pub(super) const KIND_DOCUMENT: &str = "document";
pub(super) const KIND_PASSAGE: &str = "passage";

/// The fields of the schema.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields {
    pub(super) kind: Field,
    pub(super) doc_id: Field,
    pub(super) title: Field,
    pub(super) text: Field,
    pub(super) source: Field,
    pub(super) meta_key: Field,
    pub(super) meta_value: Field,
    pub(super) size_bytes: Field,
    pub(super) ingest_time_us: Field,
    pub(super) ordinal: Field,
}

impl Fields {
    pub(super) fn schema() -> (Schema, Fields) {
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

    pub(super) fn document_record(
        &self,
        id: &str,
        doc: &NewDocument,
        time: SystemTime,
    ) -> TantivyDocument {
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

    pub(super) fn passage_record(
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

    pub(super) fn document_info(&self, doc: &TantivyDocument) -> DocumentInfo {
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

    pub(super) fn passage(&self, doc: &TantivyDocument, score: f32) -> RetrievedPassage {
        RetrievedPassage {
            document_id: self.str(doc, self.doc_id),
            title: self.str(doc, self.title),
            text: self.str(doc, self.text),
            score,
            source: self.str(doc, self.source),
        }
    }

    pub(super) fn id_term(&self, id: &str) -> Term {
        Term::from_field_text(self.doc_id, id)
    }

    pub(super) fn kind_query(&self, kind: &str) -> TermQuery {
        TermQuery::new(
            Term::from_field_text(self.kind, kind),
            IndexRecordOption::Basic,
        )
    }
}

pub(super) fn unix_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
