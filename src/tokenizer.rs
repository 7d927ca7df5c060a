//! Tokens as the built-in models see them: cl100k_base BPE (tiktoken-rs).
//!
//! A BPE token is a run of *bytes*, and a character outside ASCII (Chinese,
//! emoji) is often split across two or three tokens. Clients must never get a
//! chunk that ends inside a character, so tokens are decoded through a
//! [`Utf8Assembler`] and grouped into [`Piece`]s that each end on a character
//! boundary and remember how many tokens they hold.
//!
//! The tables are about 22 MB once decoded and take about 0.06 s to build
//! in a release build (270 million instructions), so they are built when
//! first needed, not at start-up: an idle server, or one that only runs
//! tasks, never holds them. [`Tokenizer::loaded`] builds them on a blocking
//! thread, once for every caller that waits on it; the chat and RAG paths
//! wait on it inside the response stream before their first token, so no
//! async worker stalls and the call's deadline and cancel still apply.

use std::sync::OnceLock;

use tiktoken_rs::{CoreBPE, Rank, cl100k_base};

use crate::llm::{ChatMessage, Role};

/// Merges of cl100k_base after which a single-token word no longer counts
/// as common (see [`Tokenizer::is_common_word`]). In its first 30,000 ranks
/// are words such as `little` (2,697), `website` (3,997), `forever`
/// (16,058) and `flour` (20,415); `cron` (47,682) and `reconnect` (51,136)
/// come later, and `rye`, `logrotate` or `sourdough` are no token at all.
const COMMON_WORD_RANKS: Rank = 30_000;

/// Tokens that frame each message in the chat format (OpenAI's accounting).
const TOKENS_PER_MESSAGE: usize = 3;
/// Tokens added when a message has a `name`.
const TOKENS_PER_NAME: usize = 1;
/// Tokens that prime the assistant's reply.
const TOKENS_PER_REPLY: usize = 3;

/// The cl100k_base tables, once built (the one lazy cell: [`Tokenizer::loaded`]
/// asks it whether they are).
static TABLES: OnceLock<CoreBPE> = OnceLock::new();

/// The cl100k_base tokenizer. Cheap to copy; the tables are built once per
/// process, on first use (see the module doc).
#[derive(Clone, Copy)]
pub struct Tokenizer {
    /// The tables live in [`TABLES`]; this handle only says where.
    _private: (),
}

/// Text that ends on a character boundary, and the tokens it was made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Valid UTF-8 text.
    pub text: String,
    /// How many tokens produced it (at least 1).
    pub tokens: u32,
}

impl Tokenizer {
    /// The cl100k_base tokenizer.
    pub fn cl100k() -> Self {
        Self { _private: () }
    }

    /// Whether the tables are built (a call that counts tokens now costs no
    /// load).
    pub fn is_loaded() -> bool {
        TABLES.get().is_some()
    }

    /// Waits until the tables are built, building them on a blocking thread
    /// if no one has yet. Callers that arrive during the load wait for the
    /// same load.
    pub async fn loaded() {
        if Self::is_loaded() {
            return;
        }
        static LOAD: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        LOAD.get_or_init(|| async {
            // A failed load (the thread panicked) is retried inline by the
            // next use, which reports it there.
            let _ = tokio::task::spawn_blocking(Self::tables).await;
        })
        .await;
    }

    /// The tables, built now if they are not yet.
    fn tables() -> &'static CoreBPE {
        // The tables are compiled into tiktoken-rs: only a bug there can
        // make them fail to parse.
        TABLES.get_or_init(|| cl100k_base().expect("tiktoken-rs's own cl100k_base tables parse"))
    }

    /// Number of tokens in `text`.
    pub fn count(&self, text: &str) -> usize {
        Self::tables().encode_ordinary(text).len()
    }

    /// Tokens of a chat prompt, counted the way OpenAI bills chat models.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> u32 {
        let per_message = messages.iter().map(|m| {
            let name = if m.name.is_empty() {
                0
            } else {
                TOKENS_PER_NAME + self.count(&m.name)
            };
            TOKENS_PER_MESSAGE + self.role_tokens(m.role) + self.count(&m.content) + name
        });
        saturate(per_message.sum::<usize>() + TOKENS_PER_REPLY)
    }

    /// Tokens of a role's name, counted once: every prompt has a role per
    /// message, and each count runs the tokenizer's regex (about 6,000
    /// instructions for a word).
    fn role_tokens(&self, role: Role) -> usize {
        static COUNTS: [OnceLock<usize>; 4] = [const { OnceLock::new() }; 4];
        // One cell a role (a new role fails to compile here).
        let cell = match role {
            Role::System => &COUNTS[0],
            Role::User => &COUNTS[1],
            Role::Assistant => &COUNTS[2],
            Role::Tool => &COUNTS[3],
        };
        *cell.get_or_init(|| self.count(role.as_str()))
    }

    /// Splits `text` into tokens, grouped into pieces that never split a
    /// character.
    pub(crate) fn pieces(&self, text: &str) -> Vec<Piece> {
        let tokens = Self::tables().encode_ordinary(text);
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut assembler = Utf8Assembler::default();
        let mut pending_tokens = 0;
        for token in tokens {
            pending_tokens += 1;
            if let Some(text) = assembler.push(&self.token_bytes(token)) {
                pieces.push(Piece {
                    text,
                    tokens: pending_tokens,
                });
                pending_tokens = 0;
            }
        }
        if let Some(text) = assembler.finish() {
            pieces.push(Piece {
                text,
                tokens: pending_tokens.max(1),
            });
        }
        pieces
    }

    /// Whether `word` is a common English word: written after a space and in
    /// lower case, it is one token among the table's first merges. BPE merges
    /// the most frequent byte pairs of its training text (a broad web
    /// corpus) first, so an early single token is a word that text used
    /// often; a rare word, a coined one or a name takes several tokens or a
    /// late one. RAG uses it to tell the reader's everyday paraphrase from
    /// a specific subject the documents never mention.
    pub(crate) fn is_common_word(&self, word: &str) -> bool {
        if word.is_empty() || word.contains(char::is_whitespace) {
            return false;
        }
        let spaced = format!(" {}", word.to_lowercase());
        matches!(Self::tables().encode_ordinary(&spaced)[..], [token] if token < COMMON_WORD_RANKS)
    }

    /// The bytes of one token; empty for a token the table does not know
    /// (which `encode_ordinary` never produces).
    fn token_bytes(&self, token: Rank) -> Vec<u8> {
        Self::tables().decode_bytes(&[token]).unwrap_or_default()
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer(cl100k_base)")
    }
}

/// Converts a count to the `uint32` of the wire, saturating.
pub(crate) fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Re-assembles UTF-8 text from byte runs that may end inside a character.
#[derive(Debug, Default)]
pub(crate) struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds bytes; returns the longest complete text available, if any.
    /// Bytes that can never be valid UTF-8 come out as U+FFFD.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An invalid sequence (not merely an incomplete one) is replaced.
            Err(e) if e.error_len().is_some() => self.pending.len(),
            Err(e) => e.valid_up_to(),
        };
        if complete == 0 {
            return None;
        }
        let rest = self.pending.split_off(complete);
        let done = std::mem::replace(&mut self.pending, rest);
        Some(
            String::from_utf8(done)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )
    }

    /// Whatever is left, with an incomplete trailing character replaced.
    pub(crate) fn finish(self) -> Option<String> {
        (!self.pending.is_empty()).then(|| String::from_utf8_lossy(&self.pending).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_words_are_early_single_tokens() {
        let t = Tokenizer::cl100k();
        for word in ["little", "possible", "Website", "signs", "forever", "flour"] {
            assert!(t.is_common_word(word), "{word}");
        }
        for word in [
            "rye",
            "logrotate",
            "sourdough",
            "reconnect",
            "two words",
            "",
        ] {
            assert!(!t.is_common_word(word), "{word}");
        }
    }

    #[test]
    fn assembler_holds_back_a_split_character() {
        let bytes = "é中😀".as_bytes();
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(&bytes[..1]), None);
        assert_eq!(a.push(&bytes[1..3]).as_deref(), Some("é"));
        assert_eq!(a.push(&bytes[3..4]), None);
        assert_eq!(a.push(&bytes[4..5]).as_deref(), Some("中"));
        assert_eq!(a.push(&bytes[5..8]), None);
        assert_eq!(a.push(&bytes[8..]).as_deref(), Some("😀"));
        assert_eq!(a.finish(), None);
    }

    #[test]
    fn assembler_replaces_invalid_bytes_instead_of_stalling() {
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(&[0xff, b'a']).as_deref(), Some("\u{fffd}a"));
        assert_eq!(a.push(&[0xe4]), None);
        assert_eq!(a.finish().as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn pieces_rebuild_the_text_and_never_split_characters() {
        let t = Tokenizer::cl100k();
        let text = "什么是异步编程？Async 🦀 streams, naïve café 🎉🎉";
        let pieces = t.pieces(text);
        let joined: String = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, text);
        let tokens: u32 = pieces.iter().map(|p| p.tokens).sum();
        assert_eq!(tokens as usize, t.count(text));
        // Some character of this text spans several tokens, so grouping happened.
        assert!(pieces.len() < tokens as usize);
    }

    #[test]
    fn prompt_tokens_follow_openai_chat_accounting() {
        let t = Tokenizer::cl100k();
        let messages = [ChatMessage::user("hello")];
        // 3 framing + "user" (1) + "hello" (1) + 3 reply priming.
        assert_eq!(t.prompt_tokens(&messages), 8);
    }

    #[test]
    fn role_names_are_counted_as_the_tokenizer_counts_them() {
        let t = Tokenizer::cl100k();
        for role in [Role::System, Role::User, Role::Assistant, Role::Tool] {
            assert_eq!(t.role_tokens(role), t.count(role.as_str()), "{role:?}");
        }
    }
}
