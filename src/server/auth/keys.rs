//! The API keys file and the one lookup of a presented key.
//!
//! The file (`--api-keys-file`) holds one key a line, optionally named
//! (`name:key`, split at the first colon, so a named key may contain
//! colons); blank lines and lines starting with `#` are ignored. A key
//! without a name is known by its line (`line-7`). Names, never keys, are
//! what logs and errors show: no error message of this module quotes a
//! key or a line.
//!
//! A presented key is compared with every configured key in constant time
//! (`subtle`), so the time a refusal takes says nothing about how much of
//! a key was right.

use std::{
    fmt,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use subtle::ConstantTimeEq;

use crate::server::slots::{Slot, Slots};

/// Largest keys file read.
pub(crate) const MAX_KEYS_FILE_BYTES: u64 = 1 << 20;
/// Longest key accepted in the file.
pub(crate) const MAX_KEY_LEN: usize = 512;
/// Longest key name accepted in the file.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Keys shorter than this are accepted with a warning at start-up.
const SHORT_KEY: usize = 16;

/// Why the keys file cannot be used. Messages name the file and the line,
/// never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    /// The file could not be read.
    #[error("cannot read the API keys file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_KEYS_FILE_BYTES`].
    #[error("the API keys file {path} is larger than {MAX_KEYS_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is not a valid entry.
    #[error("the API keys file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file holds no key: every call would be refused.
    #[error("the API keys file {path} holds no key")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Who made a call: the name of the key it presented. Put in the request's
/// extensions by the key check, read by the call's bookkeeping.
#[derive(Clone)]
pub(crate) struct Caller {
    name: Arc<str>,
    /// The key's share of streams (`--max-streams-per-key`), if limited.
    streams: Option<Slots>,
}

impl Caller {
    /// The key's name (safe to log).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A place among the key's streams: `Ok(None)` when the key has no
    /// limit, `Err(limit)` when it is at its limit.
    pub(crate) fn admit_stream(&self) -> Result<Option<Slot>, i64> {
        match &self.streams {
            None => Ok(None),
            Some(slots) => slots.try_take().map(Some).ok_or(slots.limit()),
        }
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).finish()
    }
}

/// One configured key.
struct Entry {
    key: Box<[u8]>,
    caller: Caller,
}

/// The configured keys.
pub(crate) struct ApiKeys {
    entries: Vec<Entry>,
}

impl fmt::Debug for ApiKeys {
    /// Names only: a key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.caller.name))
            .finish()
    }
}

impl ApiKeys {
    /// Reads the keys of `path`; each key may hold at most
    /// `max_streams_per_key` streams at once (`None`: no per-key limit).
    pub(crate) fn load(
        path: &Path,
        max_streams_per_key: Option<usize>,
    ) -> Result<Self, KeysFileError> {
        let read_error = |source| KeysFileError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = String::new();
        file.take(MAX_KEYS_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if text.len() as u64 > MAX_KEYS_FILE_BYTES {
            return Err(KeysFileError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::parse(&text, max_streams_per_key).map_err(|error| match error {
            ParseError::Line { line, reason } => KeysFileError::Line {
                path: path.to_owned(),
                line,
                reason,
            },
            ParseError::Empty => KeysFileError::Empty {
                path: path.to_owned(),
            },
        })
    }

    /// Parses the content of a keys file.
    fn parse(text: &str, max_streams_per_key: Option<usize>) -> Result<Self, ParseError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let fail = |reason| ParseError::Line {
                line: number,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, key) = match line.split_once(':') {
                Some((name, key)) => (name.trim().to_owned(), key.trim()),
                None => (format!("line-{number}"), line),
            };
            if name.is_empty() || name.len() > MAX_NAME_LEN || !is_token(name.as_bytes()) {
                return Err(fail(
                    "a key name is 1 to 64 visible ASCII characters without spaces",
                ));
            }
            if key.is_empty() || key.len() > MAX_KEY_LEN || !is_token(key.as_bytes()) {
                return Err(fail(
                    "a key is 1 to 512 visible ASCII characters without spaces",
                ));
            }
            if entries.iter().any(|e| *e.caller.name == *name) {
                return Err(fail("this key name is used twice"));
            }
            if entries.iter().any(|e| *e.key == *key.as_bytes()) {
                return Err(fail("this key is listed twice"));
            }
            if key.len() < SHORT_KEY {
                tracing::warn!(
                    name = %name,
                    "API key shorter than {SHORT_KEY} characters: easy to guess"
                );
            }
            entries.push(Entry {
                key: key.as_bytes().into(),
                caller: Caller {
                    name: name.into(),
                    streams: max_streams_per_key.map(Slots::new),
                },
            });
        }
        if entries.is_empty() {
            return Err(ParseError::Empty);
        }
        Ok(Self { entries })
    }

    /// How many keys are configured.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The caller whose key is `presented`, if any. Every key is compared,
    /// each in constant time.
    pub(crate) fn find(&self, presented: &[u8]) -> Option<&Caller> {
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.key.ct_eq(presented)) {
                found = Some(&entry.caller);
            }
        }
        found
    }
}

/// A keys file that cannot be parsed, before the path is known.
#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Line { line: usize, reason: &'static str },
    Empty,
}

/// Visible ASCII, no spaces: what a header value and a log line hold as is.
fn is_token(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_graphic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_comments_and_blank_lines() {
        let keys = ApiKeys::parse(
            "# the team's keys\n\nalice:sk-alice-0123456789abcdef\n  sk-anon-0123456789abcdef  \nbob : sk:with:colons-0123456789\n",
            None,
        )
        .expect("parses");
        assert_eq!(keys.len(), 3);
        let name = |key: &str| keys.find(key.as_bytes()).map(|c| c.name().to_owned());
        assert_eq!(name("sk-alice-0123456789abcdef").as_deref(), Some("alice"));
        assert_eq!(name("sk-anon-0123456789abcdef").as_deref(), Some("line-4"));
        assert_eq!(name("sk:with:colons-0123456789").as_deref(), Some("bob"));
        assert_eq!(name("sk-alice-0123456789abcde"), None);
        assert_eq!(name("sk-alice-0123456789abcdefg"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn bad_lines_are_named_by_number_without_their_content() {
        let cases = [
            ("a:one-secret\na:two-secret\n", 2),
            ("a:same-secret\nb:same-secret\n", 2),
            ("ok:fine-secret\n:no-name\n", 2),
            ("name:\n", 1),
            ("x:has space\n", 1),
            ("x:caf\u{e9}\n", 1),
        ];
        for (text, line) in cases {
            match ApiKeys::parse(text, None) {
                Err(ParseError::Line { line: at, .. }) => assert_eq!(at, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            ApiKeys::parse("# nothing\n\n", None).err(),
            Some(ParseError::Empty)
        );
    }

    #[test]
    fn debug_output_shows_names_only() {
        let keys = ApiKeys::parse("alice:sk-very-secret-value\n", Some(2)).expect("parses");
        let shown = format!("{keys:?} {:?}", keys.find(b"sk-very-secret-value"));
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn a_key_holds_at_most_its_share_of_streams() {
        let keys = ApiKeys::parse("alice:sk-alice-0123456789abcdef\n", Some(2)).expect("parses");
        let alice = keys.find(b"sk-alice-0123456789abcdef").expect("alice");
        let first = alice.admit_stream().expect("first");
        let _second = alice.admit_stream().expect("second");
        assert_eq!(alice.admit_stream().err(), Some(2));
        drop(first);
        assert!(alice.admit_stream().is_ok());
    }
}
