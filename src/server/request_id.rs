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

/// Marks the request id as never indexed by HTTP/2's header compression
/// (HPACK), before it is echoed on the response. Each id is sent once, so
/// indexing it would only push out of the connection's table the entries
/// that do repeat (`content-type`, `grpc-status`), which every later
/// response on the connection would then send and index again.
pub(crate) fn unindexed<B>(mut request: Request<B>) -> Request<B> {
    if let Some(id) = request.headers_mut().get_mut(REQUEST_ID_HEADER) {
        id.set_sensitive(true);
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

    #[tokio::test]
    async fn the_echoed_id_is_the_requests_and_never_indexed() {
        use tower::{ServiceBuilder, ServiceExt};
        use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

        let echo = ServiceBuilder::new()
            .map_request(drop_unacceptable)
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .map_request(unindexed)
            .layer(PropagateRequestIdLayer::x_request_id())
            .service_fn(|_: Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            });
        for (sent, kept) in [
            (Some("my-id"), true),
            (Some("tab\there"), false),
            (None, false),
        ] {
            let mut request = Request::builder();
            if let Some(id) = sent {
                request = request.header(REQUEST_ID_HEADER, id);
            }
            let request = request.body(()).expect("request");
            let response = echo.clone().oneshot(request).await.expect("infallible");
            let id = response.headers().get(REQUEST_ID_HEADER).expect("echoed");
            assert!(id.is_sensitive(), "{sent:?}");
            assert_eq!(id.to_str().ok() == sent, kept, "{sent:?}: {id:?}");
            assert!(!id.is_empty());
        }
    }
}
