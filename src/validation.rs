//! The one builder every request validation uses to collect violations.
//!
//! Validation (in `chat::request`, `rag::request`, `tasks::request`) turns a
//! protocol-neutral *draft* of a request into a checked domain request
//! before any work starts. Every rule is checked and every violation is
//! reported at once, with the field's path (`messages[3].content`,
//! `documents[0].metadata["k"]`), so a client fixes its request in one round
//! trip whichever protocol it speaks.
//!
//! What is reported is bounded, whatever the request: at most
//! [`MAX_LISTED`] violations and [`MAX_LISTED_BYTES`] of text (each field
//! path and description cut to a few hundred bytes), then one more entry,
//! on the field `request`, counting the violations not listed. A request
//! with thousands of bad fields thus gets an error of a few KiB, well under
//! the 8 KiB of metadata gRPC clients accept by default.

use crate::error::{Error, FieldViolation, Result};

/// Most violations listed in one error.
pub(crate) const MAX_LISTED: usize = 20;
/// Most bytes of field paths and descriptions listed in one error.
pub(crate) const MAX_LISTED_BYTES: usize = 2048;
/// Longest field path listed (longer ones are cut).
pub(crate) const MAX_FIELD_BYTES: usize = 128;
/// Longest description listed (longer ones are cut).
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 256;

/// The violations found so far in one request.
#[derive(Debug, Default)]
#[must_use = "call `finish` to turn the violations into an error"]
pub(crate) struct Violations {
    listed: Vec<FieldViolation>,
    listed_bytes: usize,
    /// Violations found beyond what is listed.
    omitted: usize,
}

impl Violations {
    /// No violation yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong, and why.
    pub(crate) fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.listed.len() >= MAX_LISTED {
            self.omitted += 1;
            return;
        }
        let violation = FieldViolation::new(
            cut(field.into(), MAX_FIELD_BYTES),
            cut(description.into(), MAX_DESCRIPTION_BYTES),
        );
        let bytes = violation.field.len() + violation.description.len();
        if self.listed_bytes + bytes > MAX_LISTED_BYTES {
            self.omitted += 1;
            return;
        }
        self.listed_bytes += bytes;
        self.listed.push(violation);
    }

    /// Records a violation of `field` unless `ok`; `description` is only
    /// built when needed.
    pub(crate) fn require(
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
    pub(crate) fn max_bytes(&mut self, field: impl Into<String>, len: usize, max: usize) {
        self.require(len <= max, field, || {
            format!("is {len} bytes; at most {max}")
        });
    }

    /// Whether nothing was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.omitted == 0
    }

    /// `Ok` when nothing was found, else [`Error::InvalidArgument`] with
    /// the violations in the order found (the first [`MAX_LISTED`], then a
    /// count of the others).
    pub(crate) fn finish(mut self) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if self.omitted > 0 {
            self.listed.push(FieldViolation::new(
                "request",
                format!(
                    "{} more violations not listed; fix the ones above and retry",
                    self.omitted
                ),
            ));
        }
        Err(Error::InvalidArgument(self.listed))
    }
}

/// `text` cut to at most `max` bytes, on a character boundary, with `…`
/// marking the cut.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// A page request of a list (ListDocuments, ListTasks) as a client sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PageDraft {
    /// Items per page; 0 for the list's default.
    pub page_size: u32,
    /// Empty for the first page, else the `next_page_token` of the last.
    pub page_token: String,
}

/// The single violation of `field`, as an error.
pub(crate) fn invalid(field: impl Into<String>, description: impl Into<String>) -> Error {
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
