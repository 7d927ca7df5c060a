//! The one builder every request validation uses to collect violations.
//!
//! Validation (in `chat::request`, `rag::request`, `tasks::request`) turns a
//! protocol-neutral *draft* of a request into a checked domain request
//! before any work starts. Every rule is checked and every violation is
//! reported at once, with the field's path (`messages[3].content`,
//! `documents[0].metadata["k"]`), so a client fixes its request in one round
//! trip whichever protocol it speaks.

use crate::error::{Error, FieldViolation, Result};

/// The violations found so far in one request.
#[derive(Debug, Default)]
#[must_use = "call `finish` to turn the violations into an error"]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records a violation of `field` unless `ok`; `description` is only
    /// built when needed.
    pub fn require(
        &mut self,
        ok: bool,
        field: impl Into<String>,
        description: impl FnOnce() -> String,
    ) {
        if !ok {
            self.add(field, description());
        }
    }

    /// Records a violation of `field` when `len` bytes exceed `max`.
    pub fn max_bytes(&mut self, field: impl Into<String>, len: usize, max: usize) {
        self.require(len <= max, field, || {
            format!("is {len} bytes; at most {max}")
        });
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was found, else [`Error::InvalidArgument`] with
    /// every violation in the order found.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

/// A page request of a list (ListDocuments, ListTasks) as a client sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageDraft {
    /// Items per page; 0 for the list's default.
    pub page_size: u32,
    /// Empty for the first page, else the `next_page_token` of the last.
    pub page_token: String,
}

/// The single violation of `field`, as an error.
pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(field, description)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_violation_in_order() {
        let mut v = Violations::new();
        v.max_bytes("a", 3, 4);
        v.max_bytes("b", 5, 4);
        v.require(false, "c", || "wrong".into());
        v.add("d", "also wrong");
        match v.finish() {
            Err(Error::InvalidArgument(found)) => {
                let fields: Vec<_> = found.iter().map(|f| f.field.as_str()).collect();
                assert_eq!(fields, ["b", "c", "d"]);
                assert_eq!(found[0].description, "is 5 bytes; at most 4");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn nothing_found_is_ok() {
        assert!(Violations::new().finish().is_ok());
    }
}
