//! ListTasks page tokens that the server can tell from forgeries.
//!
//! A page token carries the list key the next page starts before (see
//! [`super::TaskPage`]) and an HMAC-SHA256 tag over it, so a token the
//! server did not issue (edited, guessed, or from another deployment) is
//! refused with INVALID_ARGUMENT on `page_token` instead of being read as a
//! cursor. The key comes from the task store, because a token issued by
//! one replica must be honoured by every replica that sees the same tasks:
//! the in-memory store makes a random key per process (its tasks live and
//! die with the process, and so do its tokens); the Redis store shares one
//! random key through Redis (created once with `SET NX`), so a token from
//! replica A works on replica B.
//!
//! HMAC comes from `ring`, which TLS already builds; the comparison of tags
//! is constant-time (`subtle`).

use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use subtle::ConstantTimeEq;

/// Bytes of a signing key.
pub(crate) const KEY_BYTES: usize = 32;

/// What page tokens start with (a version, so the format can change).
const PREFIX: &str = "p1.";

/// Bytes of the tag kept in a token (HMAC-SHA256 truncated to 128 bits,
/// as RFC 2104 allows).
const TAG_BYTES: usize = 16;

/// What the tag covers besides the key: the token's purpose, so a tag made
/// for another purpose with the same key can never pass as a page token.
const CONTEXT: &[u8] = b"agentstream.v1.TaskService/ListTasks page_token\0";

/// Issues and checks page tokens with one key.
#[derive(Clone)]
pub(crate) struct PageTokens {
    key: hmac::Key,
}

impl PageTokens {
    /// Tokens signed with `key` (any length; a [`SigningKey`] in practice).
    pub(crate) fn new(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The token of the page that starts before list key `before`.
    pub(crate) fn issue(&self, before: u64) -> String {
        let tag = hmac::sign(&self.key, &message(before));
        let mut token = String::with_capacity(PREFIX.len() + 2 * (8 + TAG_BYTES));
        token.push_str(PREFIX);
        push_hex(&mut token, &before.to_be_bytes());
        push_hex(&mut token, &tag.as_ref()[..TAG_BYTES]);
        token
    }

    /// The list key in `token`, when this server issued it; `None` for
    /// anything else.
    pub(crate) fn verify(&self, token: &str) -> Option<u64> {
        let hex = token.strip_prefix(PREFIX)?;
        let mut bytes = [0u8; 8 + TAG_BYTES];
        decode_hex(hex, &mut bytes)?;
        let (order, tag) = bytes.split_at(8);
        let before = u64::from_be_bytes(order.try_into().ok()?);
        let full = hmac::sign(&self.key, &message(before));
        // `hmac::verify` wants the whole tag: compare the kept prefix in
        // constant time with subtle.
        bool::from(full.as_ref()[..TAG_BYTES].ct_eq(tag)).then_some(before)
    }
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

/// The secret of page tokens; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SigningKey([u8; KEY_BYTES]);

impl SigningKey {
    /// A fresh random key.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; KEY_BYTES];
        // The system's generator fails only when the OS has none at all,
        // where TLS could not work either; a key of zeros still verifies
        // only tokens made with it.
        if SystemRandom::new().fill(&mut key).is_err() {
            tracing::error!("no system random generator: page tokens use a fixed key");
        }
        Self(key)
    }

    /// The key's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as hex, for keeping it in a shared store.
    pub(crate) fn to_hex(&self) -> String {
        let mut hex = String::with_capacity(2 * KEY_BYTES);
        push_hex(&mut hex, &self.0);
        hex
    }

    /// A key read back from a shared store; `None` unless it is
    /// [`KEY_BYTES`] bytes of lowercase hex.
    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        let mut key = [0u8; KEY_BYTES];
        decode_hex(hex.trim(), &mut key)?;
        Some(Self(key))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

fn message(before: u64) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTEXT.len() + 8);
    message.extend_from_slice(CONTEXT);
    message.extend_from_slice(&before.to_be_bytes());
    message
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// Fills `out` from exactly `2 * out.len()` lowercase hex digits.
fn decode_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    if hex.len() != 2 * out.len() {
        return None;
    }
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_edits_are_refused() {
        let tokens = PageTokens::new(SigningKey::random().as_bytes());
        for before in [0, 1, 42, u64::MAX] {
            let token = tokens.issue(before);
            assert_eq!(tokens.verify(&token), Some(before), "{token}");
        }
        let token = tokens.issue(1_000);
        // Every single-character edit is refused.
        for i in PREFIX.len()..token.len() {
            let mut edited = token.clone().into_bytes();
            edited[i] = if edited[i] == b'0' { b'1' } else { b'0' };
            let edited = String::from_utf8(edited).expect("ascii");
            assert_eq!(tokens.verify(&edited), None, "{edited}");
        }
        for bad in [
            "",
            "p1.",
            "before-42",
            &token[..token.len() - 1],
            &format!("{token}0"),
        ] {
            assert_eq!(tokens.verify(bad), None, "{bad}");
        }
        assert_eq!(tokens.verify(&token.to_uppercase()), None);
    }

    #[test]
    fn another_key_does_not_verify() {
        let a = PageTokens::new(SigningKey::random().as_bytes());
        let b = PageTokens::new(SigningKey::random().as_bytes());
        assert_eq!(b.verify(&a.issue(7)), None);
        let same = PageTokens::new(b"shared key");
        let again = PageTokens::new(b"shared key");
        assert_eq!(again.verify(&same.issue(7)), Some(7));
    }

    #[test]
    fn keys_survive_hex() {
        let key = SigningKey::random();
        assert_eq!(SigningKey::from_hex(&key.to_hex()), Some(key.clone()));
        assert_eq!(SigningKey::from_hex("zz"), None);
        assert_eq!(format!("{key:?}"), "SigningKey(..)");
    }
}
