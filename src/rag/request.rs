//! Validation of the RAG requests against the contract's limits.
//!
//! Each edge fills a protocol-neutral draft (the documents of an ingestion,
//! an [`AnswerDraft`], a [`ListDraft`], a document id) and calls the checks
//! here before any work starts; every rule is checked and every violation
//! reported at once, with the same field paths for every protocol.

use std::collections::HashMap;

use super::document::{MAX_ID_BYTES, NewDocument, check_document};
use crate::{
    error::Result,
    llm::{TokenBudget, check_model_name},
    validation::{PageDraft, Violations, invalid},
};

/// Most documents in one IngestDocuments request.
pub(crate) const MAX_DOCUMENTS: usize = 1_000;
/// Most bytes of all documents of one request (text, title, source and
/// metadata together): larger corpora are sent in several requests.
pub(crate) const MAX_INGEST_BYTES: usize = 32 << 20;
/// Largest IngestDocuments message the server decodes: the content limit
/// plus room for the protobuf envelope. Bigger messages are refused by the
/// transport with OUT_OF_RANGE before they are read.
pub(crate) const MAX_MESSAGE_BYTES: usize = MAX_INGEST_BYTES + (1 << 20);
/// Longest question, in bytes.
pub(crate) const MAX_QUESTION_BYTES: usize = 8 << 10;
/// Passages retrieved when a request gives `top_k` 0.
pub(crate) const DEFAULT_TOP_K: usize = 4;
/// Most passages a request may ask for.
pub(crate) const MAX_TOP_K: u32 = 20;
/// Documents per page when a request gives `page_size` 0.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 50;
/// Most documents per page.
pub(crate) const MAX_PAGE_SIZE: u32 = 1_000;

/// Checks the documents of an IngestDocuments request.
pub(crate) fn ingest_request(documents: Vec<NewDocument>) -> Result<Vec<NewDocument>> {
    let mut violations = Violations::new();
    let count = documents.len();
    violations.require((1..=MAX_DOCUMENTS).contains(&count), "documents", || {
        format!("{count} documents given; 1 to {MAX_DOCUMENTS} required")
    });
    let total: usize = documents.iter().map(NewDocument::size_bytes).sum();
    violations.require(total <= MAX_INGEST_BYTES, "documents", || {
        format!("{total} bytes in all; at most {MAX_INGEST_BYTES} per request, send more requests")
    });
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, doc) in documents.iter().enumerate() {
        check_document(&format!("documents[{i}]"), doc, &mut violations);
        if !doc.id.is_empty()
            && let Some(first) = first_of.insert(&doc.id, i)
        {
            first_of.insert(&doc.id, first);
            violations.add(
                format!("documents[{i}].id"),
                format!("repeats documents[{first}].id; each id at most once per request"),
            );
        }
    }
    violations.finish()?;
    Ok(documents)
}

/// A StreamAnswer request as a client sent it. Zero values mean "the
/// default".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AnswerDraft {
    /// The question.
    pub question: String,
    /// Passages to retrieve; 0 for the default.
    pub top_k: u32,
    /// The model; empty for the default.
    pub model: String,
    /// Most tokens of the answer; 0 for the default.
    pub max_tokens: u32,
}

/// A ListDocuments request as a client sent it.
pub(crate) type ListDraft = PageDraft;

/// A checked StreamAnswer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnswerRequest {
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
    /// Checks `raw` against the contract and `budget`.
    pub(crate) fn validate(raw: AnswerDraft, budget: &TokenBudget) -> Result<Self> {
        let mut violations = Violations::new();
        if raw.question.trim().is_empty() {
            violations.add("question", "is required");
        } else {
            violations.max_bytes("question", raw.question.len(), MAX_QUESTION_BYTES);
        }
        violations.require(raw.top_k <= MAX_TOP_K, "top_k", || {
            format!("{} passages asked; at most {MAX_TOP_K}", raw.top_k)
        });
        check_model_name(&raw.model, &mut violations);
        let max_tokens = budget.resolve(raw.max_tokens, &mut violations);
        violations.finish()?;
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
pub(crate) struct ListRequest {
    /// Documents per page, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: usize,
    /// The id to continue after, from the page token.
    pub after: Option<String>,
}

impl ListRequest {
    /// Checks `raw`.
    pub(crate) fn validate(raw: ListDraft) -> Result<Self> {
        let mut violations = Violations::new();
        violations.require(raw.page_size <= MAX_PAGE_SIZE, "page_size", || {
            format!("{} asked; at most {MAX_PAGE_SIZE}", raw.page_size)
        });
        let after = if raw.page_token.is_empty() {
            None
        } else {
            let after = decode_page_token(&raw.page_token);
            violations.require(after.is_some(), "page_token", || {
                "is not a token this server issued; pass `next_page_token` unchanged".into()
            });
            after
        };
        violations.finish()?;
        Ok(Self {
            page_size: match raw.page_size {
                0 => DEFAULT_PAGE_SIZE,
                n => n as usize,
            },
            after,
        })
    }
}

/// Checks the document id of a DeleteDocument request.
pub(crate) fn delete_request(document_id: &str) -> Result<()> {
    if document_id.is_empty() || document_id.len() > MAX_ID_BYTES {
        return Err(invalid(
            "document_id",
            format!("is required, at most {MAX_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Prefix of page tokens, naming their format.
const PAGE_TOKEN_PREFIX: &str = "after:";

/// The page token that continues after the document `id`: the id itself,
/// hex-encoded so the token is plain ASCII whatever the id holds.
pub(crate) fn encode_page_token(id: &str) -> String {
    let mut token = String::with_capacity(PAGE_TOKEN_PREFIX.len() + id.len() * 2);
    token.push_str(PAGE_TOKEN_PREFIX);
    for byte in id.bytes() {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

/// The id a page token continues after; `None` when malformed.
pub(crate) fn decode_page_token(token: &str) -> Option<String> {
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
    use crate::error::Error;

    fn document(id: &str, text: &str) -> NewDocument {
        NewDocument {
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
        let raw = vec![big, document("x", "ok"), document("x", "again")];
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
        assert_eq!(fields(ingest_request(Vec::new())), ["documents"]);
        let many = (0..1001).map(|_| document("", "x")).collect();
        assert_eq!(fields(ingest_request(many)), ["documents"]);
        let heavy = (0..9).map(|_| document("", &"x".repeat(4 << 20))).collect();
        assert_eq!(fields(ingest_request(heavy)), ["documents"]);
    }

    #[test]
    fn answer_defaults_and_limits() {
        let limits = TokenBudget {
            default_max_tokens: 300,
            max_tokens_limit: 1000,
        };
        let ok = AnswerRequest::validate(
            AnswerDraft {
                question: "why?".into(),
                ..Default::default()
            },
            &limits,
        )
        .expect("valid");
        assert_eq!((ok.top_k, ok.max_tokens), (DEFAULT_TOP_K, 300));
        let bad = AnswerDraft {
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
