//! Documents as the index receives them, their limits and their one check.
//!
//! Both the request validation ([`super::request`]) and the index itself
//! ([`super::index`], which enforces its own invariants for library callers)
//! check documents with [`check_document`], so the rules live in one place.

use std::collections::BTreeMap;

use crate::validation::Violations;

/// Longest document id, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 256;
/// Longest title, in bytes.
pub(crate) const MAX_TITLE_BYTES: usize = 1 << 10;
/// Longest document text, in bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 4 << 20;
/// Longest source, in bytes.
pub(crate) const MAX_SOURCE_BYTES: usize = 2 << 10;
/// Most metadata entries per document.
pub(crate) const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes (and keys must not be empty).
pub(crate) const MAX_METADATA_KEY_BYTES: usize = 256;
/// Longest metadata value, in bytes.
pub(crate) const MAX_METADATA_VALUE_BYTES: usize = 4 << 10;

/// A document to index, as a client sends it (the draft of an ingestion is
/// a list of these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewDocument {
    /// Empty: an id is assigned. An existing id is replaced.
    pub id: String,
    /// Title.
    pub title: String,
    /// Full text.
    pub text: String,
    /// Where it came from.
    pub source: String,
    /// Free-form key/value pairs.
    pub metadata: BTreeMap<String, String>,
}

impl NewDocument {
    /// Bytes of everything the document carries (text, title, source, id
    /// and metadata), which the per-request total limits.
    pub fn size_bytes(&self) -> usize {
        let metadata: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.id.len() + self.title.len() + self.text.len() + self.source.len() + metadata
    }
}

/// Checks one document against every documented limit, naming its fields
/// under `path` (e.g. `documents[3]` gives `documents[3].title`).
pub(crate) fn check_document(path: &str, doc: &NewDocument, violations: &mut Violations) {
    violations.max_bytes(format!("{path}.id"), doc.id.len(), MAX_ID_BYTES);
    violations.max_bytes(format!("{path}.title"), doc.title.len(), MAX_TITLE_BYTES);
    violations.max_bytes(format!("{path}.text"), doc.text.len(), MAX_TEXT_BYTES);
    violations.max_bytes(format!("{path}.source"), doc.source.len(), MAX_SOURCE_BYTES);
    violations.require(!doc.text.trim().is_empty(), format!("{path}.text"), || {
        "is required (and not only whitespace)".into()
    });
    violations.require(
        doc.metadata.len() <= MAX_METADATA_ENTRIES,
        format!("{path}.metadata"),
        || {
            format!(
                "{} entries; at most {MAX_METADATA_ENTRIES}",
                doc.metadata.len()
            )
        },
    );
    for (key, value) in &doc.metadata {
        violations.require(
            !key.is_empty()
                && key.len() <= MAX_METADATA_KEY_BYTES
                && value.len() <= MAX_METADATA_VALUE_BYTES,
            format!("{path}.metadata[{key:?}]"),
            || {
                format!(
                    "keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes, values at most \
                     {MAX_METADATA_VALUE_BYTES}"
                )
            },
        );
    }
}
