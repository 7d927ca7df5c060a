//! Request ids: the client's `x-request-id` when it is printable text, a
//! generated one otherwise.
//!
//! Every response echoes the id and every log line of the call carries it,
//! so it must be something a log line can hold as is: 1 to
//! [`MAX_REQUEST_ID_LEN`] printable ASCII characters (spaces included, as
//! any header value may have them). Anything else (empty, too long,
//! non-ASCII, control characters) is dropped before the id is chosen, so
//! the call gets a fresh UUID, echoed and logged like any other.

use http::{HeaderValue, Request};

/// The header that carries the request id.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id kept from a client.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id is kept.
pub(crate) fn is_acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    let printable = |b: &u8| b.is_ascii_graphic() || *b == b' ';
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(printable)
}

/// Removes an unacceptable `x-request-id`, so that a new one is generated.
pub(crate) fn drop_unacceptable<B>(mut request: Request<B>) -> Request<B> {
    let ids = request.headers().get_all(REQUEST_ID_HEADER);
    let mut ids = ids.iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => is_acceptable(id),
        // Several ids: which one would the logs show? None of them.
        (Some(_), Some(_)) => false,
    };
    if !keep {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ids_are_kept_and_anything_else_is_not() {
        let ids = [
            "my-id",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "a.b_c:d/e",
            "my request",
        ];
        for ok in ids {
            assert!(is_acceptable(&HeaderValue::from_static(ok)), "{ok}");
        }
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in ["", "tab\there", long.as_str()] {
            assert!(
                !is_acceptable(&HeaderValue::from_str(bad).expect("header")),
                "{bad}"
            );
        }
        let non_ascii = HeaderValue::from_bytes("é".as_bytes()).expect("obs-text");
        assert!(!is_acceptable(&non_ascii));
    }
}
