//! The browser demo page at `/`.
//!
//! One page of plain HTML, JavaScript and CSS (`src/http/demo/`), compiled
//! into the binary with `include_bytes!` so the server needs no files at run
//! time and the page needs no build step and no network beyond this server.
//! It uses the public HTTP API exactly as any browser app would (`fetch`
//! with streamed SSE bodies, `AbortController`, `EventSource`), so it is
//! also the end-to-end test of that API in a real browser
//! (`examples/clients/node/test/browser.test.js`).
//!
//! Caching: every response carries a strong `ETag` (a hash of the embedded
//! bytes, computed at compile time) and `Cache-Control: no-cache`, so a
//! browser revalidates each load and gets `304 Not Modified` until the
//! binary changes: never a stale script after an upgrade, no body re-sent
//! otherwise. A strict Content-Security-Policy allows only this origin's
//! own script, style and connections.

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// One embedded file of the page.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: &'static str,
}

/// Declares an embedded asset with its compile-time ETag.
macro_rules! asset {
    ($file:literal, $content_type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("demo/", $file));
        const ETAG: [u8; 18] = etag_of(BODY);
        Asset {
            body: BODY,
            content_type: $content_type,
            // The bytes are ASCII quotes and hex digits by construction.
            etag: match std::str::from_utf8(&ETAG) {
                Ok(etag) => etag,
                Err(_) => panic!("etag is ASCII"),
            },
        }
    }};
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const APP_JS: Asset = asset!("app.js", "text/javascript; charset=utf-8");
const STYLE_CSS: Asset = asset!("style.css", "text/css; charset=utf-8");

/// Only this origin's script, style and connections; no inline code, no
/// framing. `data:` images only for the empty favicon.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `"` + 16 hex digits of the FNV-1a hash of `bytes` + `"`, at compile time.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        out[1 + d] = HEX[((hash >> (60 - 4 * d)) & 0xf) as usize];
        d += 1;
    }
    out
}

/// The page and its assets: `GET /` (and `HEAD`), `/demo/app.js`,
/// `/demo/style.css`. Stateless, so it merges into any router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route(
            "/demo/app.js",
            get(|h: HeaderMap| async move { serve(&APP_JS, &h) }),
        )
        .route(
            "/demo/style.css",
            get(|h: HeaderMap| async move { serve(&STYLE_CSS, &h) }),
        )
}

/// The asset, or `304` when the client's `If-None-Match` has its ETag.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == asset.etag || tag == "*");
    let common = [
        (header::ETAG, HeaderValue::from_static(asset.etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(if_none_match: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        headers
    }

    #[test]
    fn etags_differ_per_file_and_are_quoted_hex() {
        let tags = [INDEX.etag, APP_JS.etag, STYLE_CSS.etag];
        for tag in tags {
            assert_eq!(tag.len(), 18);
            assert!(tag.starts_with('"') && tag.ends_with('"'));
            assert!(tag[1..17].bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(tags[0], tags[1]);
        assert_ne!(tags[1], tags[2]);
    }

    #[test]
    fn serves_the_body_with_its_type_and_cache_headers() {
        let response = serve(&APP_JS, &request(None));
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::ETAG], APP_JS.etag);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn a_matching_if_none_match_gets_304_and_a_stale_one_the_body() {
        let list = format!("\"0000000000000000\", W/{}", INDEX.etag);
        assert_eq!(
            serve(&INDEX, &request(Some(&list))).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            serve(&INDEX, &request(Some("\"0000000000000000\""))).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn the_page_loads_only_embedded_assets() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(page.contains("src=\"/demo/app.js\""));
        assert!(page.contains("href=\"/demo/style.css\""));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
