//! Validation of RagService requests against the contract's limits.
//!
//! Each raw (wire) request becomes a checked domain request before any work
//! starts; every rule is checked and every violation reported at once.

use std::collections::HashMap;

use super::index::NewDocument;
use crate::{
    error::{Error, FieldViolation, Result},
    llm::{TokenBudget, check_model_name},
    pb,
};

/// Most documents in one IngestDocuments request.
pub const MAX_DOCUMENTS: usize = 1_000;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 1 << 10;
/// Longest document text, in bytes.
pub const MAX_TEXT_BYTES: usize = 4 << 20;
/// Longest source, in bytes.
pub const MAX_SOURCE_BYTES: usize = 2 << 10;
/// Most metadata entries per document.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes (and keys must not be empty).
pub const MAX_METADATA_KEY_BYTES: usize = 256;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 4 << 10;
/// Most bytes of all documents of one request (text, title, source and
/// metadata together): larger corpora are sent in several requests.
pub const MAX_INGEST_BYTES: usize = 32 << 20;
/// Largest IngestDocuments message the server decodes: the content limit
/// plus room for the protobuf envelope. Bigger messages are refused by the
/// transport with OUT_OF_RANGE before they are read.
pub const MAX_MESSAGE_BYTES: usize = MAX_INGEST_BYTES + (1 << 20);
/// Longest question, in bytes.
pub const MAX_QUESTION_BYTES: usize = 8 << 10;
/// Passages retrieved when a request gives `top_k` 0.
pub const DEFAULT_TOP_K: usize = 4;
/// Most passages a request may ask for.
pub const MAX_TOP_K: u32 = 20;
/// Documents per page when a request gives `page_size` 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Most documents per page.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Checks an IngestDocuments request; returns its documents.
pub fn ingest_request(raw: pb::IngestDocumentsRequest) -> Result<Vec<NewDocument>> {
    let mut violations = Vec::new();
    let count = raw.documents.len();
    if count == 0 || count > MAX_DOCUMENTS {
        violations.push(FieldViolation::new(
            "documents",
            format!("{count} documents given; 1 to {MAX_DOCUMENTS} required"),
        ));
    }
    let total: usize = raw.documents.iter().map(document_bytes).sum();
    if total > MAX_INGEST_BYTES {
        violations.push(FieldViolation::new(
            "documents",
            format!(
                "{total} bytes in all; at most {MAX_INGEST_BYTES} per request, send more requests"
            ),
        ));
    }
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, doc) in raw.documents.iter().enumerate() {
        check_document(i, doc, &mut violations);
        if !doc.id.is_empty()
            && let Some(first) = first_of.insert(&doc.id, i)
        {
            first_of.insert(&doc.id, first);
            violations.push(FieldViolation::new(
                format!("documents[{i}].id"),
                format!("repeats documents[{first}].id; each id at most once per request"),
            ));
        }
    }
    Error::check(violations)?;
    Ok(raw
        .documents
        .into_iter()
        .map(|d| NewDocument {
            id: d.id,
            title: d.title,
            text: d.text,
            source: d.source,
            metadata: d.metadata.into_iter().collect(),
        })
        .collect())
}

fn document_bytes(doc: &pb::Document) -> usize {
    let metadata: usize = doc.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    doc.id.len() + doc.title.len() + doc.text.len() + doc.source.len() + metadata
}

fn check_document(i: usize, doc: &pb::Document, violations: &mut Vec<FieldViolation>) {
    let mut limit = |field: &str, len: usize, max: usize| {
        if len > max {
            violations.push(FieldViolation::new(
                format!("documents[{i}].{field}"),
                format!("is {len} bytes; at most {max}"),
            ));
        }
    };
    limit("id", doc.id.len(), MAX_ID_BYTES);
    limit("title", doc.title.len(), MAX_TITLE_BYTES);
    limit("text", doc.text.len(), MAX_TEXT_BYTES);
    limit("source", doc.source.len(), MAX_SOURCE_BYTES);
    if doc.text.trim().is_empty() {
        violations.push(FieldViolation::new(
            format!("documents[{i}].text"),
            "is required (and not only whitespace)",
        ));
    }
    if doc.metadata.len() > MAX_METADATA_ENTRIES {
        violations.push(FieldViolation::new(
            format!("documents[{i}].metadata"),
            format!(
                "{} entries; at most {MAX_METADATA_ENTRIES}",
                doc.metadata.len()
            ),
        ));
    }
    let mut keys: Vec<&String> = doc.metadata.keys().collect();
    keys.sort();
    for key in keys {
        let value = doc.metadata.get(key).map_or(0, String::len);
        if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES || value > MAX_METADATA_VALUE_BYTES
        {
            violations.push(FieldViolation::new(
                format!("documents[{i}].metadata[{key:?}]"),
                format!(
                    "keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes, values at most \
                     {MAX_METADATA_VALUE_BYTES}"
                ),
            ));
        }
    }
}

/// A checked StreamAnswer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRequest {
    /// The question, non-blank.
    pub question: String,
    /// Passages to retrieve, 1 to [`MAX_TOP_K`].
    pub top_k: usize,
    /// The model as the client named it (empty: the default).
    pub model: String,
    /// Most tokens of the answer, at least 1.
    pub max_tokens: u32,
}

impl AnswerRequest {
    /// Checks `raw` against the contract and `limits`.
    pub fn validate(raw: pb::StreamAnswerRequest, budget: &TokenBudget) -> Result<Self> {
        let mut violations = Vec::new();
        if raw.question.trim().is_empty() {
            violations.push(FieldViolation::new("question", "is required"));
        } else if raw.question.len() > MAX_QUESTION_BYTES {
            violations.push(FieldViolation::new(
                "question",
                format!(
                    "is {} bytes; at most {MAX_QUESTION_BYTES}",
                    raw.question.len()
                ),
            ));
        }
        if raw.top_k > MAX_TOP_K {
            violations.push(FieldViolation::new(
                "top_k",
                format!("{} passages asked; at most {MAX_TOP_K}", raw.top_k),
            ));
        }
        check_model_name(&raw.model, &mut violations);
        let max_tokens = budget.resolve(raw.max_tokens, &mut violations);
        Error::check(violations)?;
        Ok(Self {
            question: raw.question,
            top_k: match raw.top_k {
                0 => DEFAULT_TOP_K,
                k => k as usize,
            },
            model: raw.model,
            max_tokens,
        })
    }
}

/// A checked ListDocuments request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// Documents per page, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: usize,
    /// The id to continue after, from the page token.
    pub after: Option<String>,
}

impl ListRequest {
    /// Checks `raw`.
    pub fn validate(raw: pb::ListDocumentsRequest) -> Result<Self> {
        let mut violations = Vec::new();
        if raw.page_size > MAX_PAGE_SIZE {
            violations.push(FieldViolation::new(
                "page_size",
                format!("{} asked; at most {MAX_PAGE_SIZE}", raw.page_size),
            ));
        }
        let after = if raw.page_token.is_empty() {
            None
        } else {
            match decode_page_token(&raw.page_token) {
                Some(id) => Some(id),
                None => {
                    violations.push(FieldViolation::new(
                        "page_token",
                        "is not a token this server issued; pass `next_page_token` unchanged",
                    ));
                    None
                }
            }
        };
        Error::check(violations)?;
        Ok(Self {
            page_size: match raw.page_size {
                0 => DEFAULT_PAGE_SIZE,
                n => n as usize,
            },
            after,
        })
    }
}

/// Checks a DeleteDocument request; returns the id.
pub fn delete_request(raw: pb::DeleteDocumentRequest) -> Result<String> {
    if raw.document_id.is_empty() || raw.document_id.len() > MAX_ID_BYTES {
        return Err(Error::InvalidArgument(vec![FieldViolation::new(
            "document_id",
            format!("is required, at most {MAX_ID_BYTES} bytes"),
        )]));
    }
    Ok(raw.document_id)
}

/// Prefix of page tokens, naming their format.
const PAGE_TOKEN_PREFIX: &str = "after:";

/// The page token that continues after the document `id`: the id itself,
/// hex-encoded so the token is plain ASCII whatever the id holds.
pub fn encode_page_token(id: &str) -> String {
    let mut token = String::with_capacity(PAGE_TOKEN_PREFIX.len() + id.len() * 2);
    token.push_str(PAGE_TOKEN_PREFIX);
    for byte in id.bytes() {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

/// The id a page token continues after; `None` when malformed.
pub fn decode_page_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix(PAGE_TOKEN_PREFIX)?;
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > MAX_ID_BYTES * 2 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(id: &str, text: &str) -> pb::Document {
        pb::Document {
            id: id.into(),
            text: text.into(),
            ..Default::default()
        }
    }

    fn fields<T: std::fmt::Debug>(result: Result<T>) -> Vec<String> {
        match result {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        for id in ["a", "doc/7", "文档-1", "with space"] {
            assert_eq!(
                decode_page_token(&encode_page_token(id)).as_deref(),
                Some(id)
            );
        }
        for bad in ["", "after:", "after:0", "after:zz", "nope", "after:ff"] {
            assert_eq!(decode_page_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_document_violation_is_named() {
        let mut big = document(&"i".repeat(257), " \n");
        big.title = "t".repeat(1025);
        big.source = "s".repeat(2049);
        big.metadata = (0..65).map(|k| (format!("k{k}"), String::new())).collect();
        big.metadata.insert(String::new(), "v".into());
        let raw = pb::IngestDocumentsRequest {
            documents: vec![big, document("x", "ok"), document("x", "again")],
        };
        let got = fields(ingest_request(raw));
        assert_eq!(
            got,
            [
                "documents[0].id",
                "documents[0].title",
                "documents[0].source",
                "documents[0].text",
                "documents[0].metadata",
                "documents[0].metadata[\"\"]",
                "documents[2].id",
            ]
        );
    }

    #[test]
    fn document_count_and_total_size_are_bounded() {
        assert_eq!(
            fields(ingest_request(pb::IngestDocumentsRequest::default())),
            ["documents"]
        );
        let many = pb::IngestDocumentsRequest {
            documents: (0..1001).map(|_| document("", "x")).collect(),
        };
        assert_eq!(fields(ingest_request(many)), ["documents"]);
        let heavy = pb::IngestDocumentsRequest {
            documents: (0..9).map(|_| document("", &"x".repeat(4 << 20))).collect(),
        };
        assert_eq!(fields(ingest_request(heavy)), ["documents"]);
    }

    #[test]
    fn answer_defaults_and_limits() {
        let limits = TokenBudget {
            default_max_tokens: 300,
            max_tokens_limit: 1000,
        };
        let ok = AnswerRequest::validate(
            pb::StreamAnswerRequest {
                question: "why?".into(),
                ..Default::default()
            },
            &limits,
        )
        .expect("valid");
        assert_eq!((ok.top_k, ok.max_tokens), (DEFAULT_TOP_K, 300));
        let bad = pb::StreamAnswerRequest {
            question: " ".into(),
            top_k: 21,
            model: "m".repeat(257),
            max_tokens: 1001,
        };
        assert_eq!(
            fields(AnswerRequest::validate(bad, &limits)),
            ["question", "top_k", "model", "max_tokens"]
        );
    }
}
