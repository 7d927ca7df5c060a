//! What of an upstream's words may reach clients.
//!
//! An upstream's error body is written by software the operator runs (a
//! model server, a proxy, a load balancer), for the operator: it may name
//! internal hosts, ports, URLs and paths, or be a whole HTML page. Clients
//! get a message this server writes: the status class, the upstream's name
//! as configured and, when the upstream explained itself in JSON (OpenAI's
//! `{"error":{"message":...}}` and its variants), that explanation cleaned
//! up: every word that looks like an address (a URL, an IP address, a
//! `host:port`, the upstream's own host) replaced by `[redacted]`, control
//! characters removed, at most [`MAX_REASON_CHARS`] characters, and the
//! server's upstream API key scrubbed. The full detail goes to the server's
//! log (escaped like every logged value).

use std::net::{IpAddr, SocketAddr};

use super::config::ApiKey;

/// Longest upstream explanation passed on to a client, in characters.
pub(crate) const MAX_REASON_CHARS: usize = 200;

/// Longest field name an upstream may blame, in bytes.
const MAX_FIELD_BYTES: usize = 64;

/// What replaces a word that looks like an address.
const REDACTED: &str = "[redacted]";

/// Cleans an upstream's words before a client sees them.
#[derive(Clone)]
pub struct Redactor {
    name: String,
    /// The upstream's host, lowercase (empty when unknown).
    host: String,
    key: Option<ApiKey>,
}

impl Redactor {
    /// A redactor for the upstream `name` at `host`, whose API key is `key`.
    pub fn new(name: &str, host: &str, key: Option<ApiKey>) -> Self {
        Self {
            name: name.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            key,
        }
    }

    /// The upstream's name, as configured: what clients are told.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `text` without the upstream's API key, for the server's log.
    pub fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.scrub(text),
            None => text.to_owned(),
        }
    }

    /// An upstream's explanation, fit for a client: no key, no address,
    /// no control character, at most [`MAX_REASON_CHARS`] characters;
    /// `None` when nothing is left.
    pub fn reason(&self, explanation: &str) -> Option<String> {
        let scrubbed = self.scrub(explanation);
        let mut out = String::new();
        let mut chars = 0;
        for word in scrubbed.split(|c: char| c.is_whitespace() || c.is_control()) {
            if word.is_empty() {
                continue;
            }
            let word = if self.is_address(word) {
                REDACTED
            } else {
                word
            };
            if !out.is_empty() {
                out.push(' ');
                chars += 1;
            }
            for c in word.chars() {
                if chars >= MAX_REASON_CHARS {
                    out.push('…');
                    return Some(out);
                }
                out.push(c);
                chars += 1;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The request field an upstream blamed, when it looks like one (a
    /// short field path); anything else is dropped.
    pub fn field(&self, field: Option<String>) -> Option<String> {
        field.filter(|f| {
            !f.is_empty()
                && f.len() <= MAX_FIELD_BYTES
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.[]-".contains(&b))
        })
    }

    /// Whether `word` (punctuation around it ignored) names a place: a URL,
    /// an IP address, a `host:port`, or the upstream's host.
    fn is_address(&self, word: &str) -> bool {
        let core = word.trim_matches(|c: char| !(c.is_alphanumeric() || "[]:/._-".contains(c)));
        let core = core.trim_end_matches(['.', ':']);
        if core.is_empty() {
            return false;
        }
        let lower = core.to_ascii_lowercase();
        if lower.contains("://") {
            return true;
        }
        if !self.host.is_empty() && lower.contains(&self.host) {
            return true;
        }
        let bare = lower.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() || lower.parse::<SocketAddr>().is_ok() {
            return true;
        }
        // `name:port` and `name:port/path`: a host-like name, then digits.
        if let Some((host, rest)) = lower.split_once(':') {
            let port = rest.split('/').next().unwrap_or_default();
            let hostlike = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
            if hostlike && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                return true;
            }
        }
        false
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new("fake", "models.internal", None)
    }

    #[test]
    fn addresses_are_redacted_and_words_kept() {
        let r = redactor();
        let cases = [
            (
                "backend 10.0.3.7:8000 refused (see http://models.internal/status)",
                "backend [redacted] refused (see [redacted]",
            ),
            (
                "connect to 127.0.0.1 failed",
                "connect to [redacted] failed",
            ),
            ("[::1]:9000 is down", "[redacted] is down"),
            ("gpu-7.models.internal is busy", "[redacted] is busy"),
            ("node-3:11434/api failed", "[redacted] failed"),
            (
                "'temperature' must be at most 1",
                "'temperature' must be at most 1",
            ),
            (
                "ratio 3:2 and time 12:30",
                "ratio [redacted] and time [redacted]",
            ),
            ("line\nbreak\u{1b}[31m red", "line break [31m red"),
        ];
        for (input, expected) in cases {
            assert_eq!(r.reason(input).as_deref(), Some(expected), "{input}");
        }
        assert_eq!(r.reason(" \n "), None);
    }

    #[test]
    fn reasons_are_capped() {
        let long = "word ".repeat(200);
        let reason = redactor().reason(&long).expect("reason");
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn only_field_paths_are_blamed() {
        let r = redactor();
        assert_eq!(
            r.field(Some("messages[0].content".into())).as_deref(),
            Some("messages[0].content")
        );
        assert_eq!(r.field(Some("see http://x".into())), None);
        assert_eq!(r.field(Some("x".repeat(65))), None);
        assert_eq!(r.field(None), None);
    }
}
